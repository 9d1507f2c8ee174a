//! The masker's corpus: credential shapes in the contexts servers quote them in, each of which
//! must not survive [`server_text`], and benign texts, each of which must survive unchanged.

use super::*;

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

/// Secret names in the spellings servers use.
const NAMES: [&str; 42] = [
    "access_token",
    "accessToken",
    "AccessToken",
    "access-token",
    "ACCESS_TOKEN",
    "access%5Ftoken",
    "access%5ftoken",
    "refresh_token",
    "id_token",
    "token",
    "rt",
    "api-key",
    "x-api-key",
    "X-Api-Key",
    "apiKey",
    "api_key",
    "key",
    "pwd",
    "password",
    "Password",
    "passwd",
    "secret",
    "client_secret",
    "clientSecret",
    "client%5Fsecret",
    "jwt",
    "assertion",
    "private_key",
    "session",
    "sessionId",
    "JSESSIONID",
    "signature",
    "X-Amz-Signature",
    "auth",
    "authorization",
    "cookie",
    "set-cookie",
    "credential",
    "credentials",
    "bearer",
    "otp",
    "密码",
];

/// Notations of `name` and `value`: `{n}` is the name, `{v}` the value.
const NOTATIONS: [&str; 18] = [
    "{n}={v}",
    "a=1&{n}={v}&b=2",
    "rejected {n}: {v}",
    "{n} = {v}",
    r#"{"{n}":"{v}"}"#,
    r#"{"user":"bob", "{n}" : "{v}", "x": 1}"#,
    r#"{'{n}': '{v}'}"#,
    r#"{"{n}":"{v}"#,
    r#"{\"{n}\":\"{v}\"}"#,
    "https://api.example.com/cb?{n}={v}&page=2",
    "https://api.example.com/cb#{n}={v}&state=s",
    "<{n}>{v}</{n}>",
    r#""{n}" => "{v}""#,
    "{&quot;{n}&quot;:&quot;{v}&quot;}",
    "creds[{n}]={v}",
    "/a;{n}={v}/b",
    "{n}={v}; Path=/; HttpOnly",
    "{n}：{v}",
];

const VALUE: &str = "hunter2-Sx9Qw";

/// Token shapes, masked wherever they stand.
fn shapes() -> Vec<(&'static str, String)> {
    vec![
        ("jwt", JWT.to_string()),
        (
            "jwe",
            "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGeipsEdY3mx_etLbbWSrFr05kLzcSr4qKAq7YN7e9jwQRb23nfa6c9d-StnImGyFDbSv04uVuxIp5Zms1gNxKKK2Da14B8S4rzVRltdYwam_lDp5XnZAYpQdb76FdIKLaVmqgfwX7XWRxv2322i-vDxRfqNzo_tETKzpVLzfiwQyeyPGLBIO56YJ7eObdv0je81860ppamavo35UgoRdbYaBcoh9QcfylQr66oc6vFWXRcZ_ZT2LawVCWTIy3brGPi6UklfCpIMfIjf7iGdXKHzg.48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6jiSdiwkIr3ajwQzaBtQD_A.XFBoMYUZodetZdvTiFvSkQ".to_string(),
        ),
        (
            "unsecured jwt",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjM0NTY3ODkwIn0.".to_string(),
        ),
        ("github", "ghp_16C7e42F292c6912E7710c838347Ae178B4a".to_string()),
        (
            "github fine-grained",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz".to_string(),
        ),
        ("gitlab", "glpat-x1y2z3a4b5c6d7e8f9g0".to_string()),
        ("slack bot", "xoxb-123456789012-1234567890123-AbCdEf".to_string()),
        ("slack user", "xoxp-123456789012-1234567890123-ZyXwVu".to_string()),
        ("openai", "sk-proj-abcdefghij1234567890ABCDEFGHIJ".to_string()),
        ("openai legacy", "sk-abcdefghijklmnopqrstuvwxyz012345".to_string()),
        ("stripe", "sk_live_4eC39HqLyjWDarjtT1zdp7dc".to_string()),
        ("aws key id", "AKIAIOSFODNN7EXAMPLE".to_string()),
        ("google api key", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe".to_string()),
        ("google oauth", "ya29.a0AfH6SMBx-abcdefghijklmnop".to_string()),
        ("google refresh", "1//0gLmnopQRStuvWXyz0123456789".to_string()),
        ("sendgrid", "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".to_string()),
        ("npm", "npm_abcdefghijklmnopqrstuvwxyz0123456789".to_string()),
        ("hex 40", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b".to_string()),
        ("hex 64", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_string()),
        ("uuid", "6f1ed002-ab5d-42ee-a1c6-4d3a7f2c9e10".to_string()),
        ("opaque base62", "Zx81kPq0LmN2vB7cR4tY9wE3sD6fG5hJ".to_string()),
        ("opaque base64url", "dGhpcy1pcy1hLXJhbmRvbS10b2tlbi0xMjM0NTY3ODkw_Q2xZ".to_string()),
        ("opaque short", "a8Kf2Lq9Zr4Tx7Wm3Vn1".to_string()),
    ]
}

/// Contexts a shape is quoted in.
const SHAPE_CONTEXTS: [&str; 8] = [
    "{v}",
    "rejected {v}",
    "token '{v}' is expired",
    "got: {v}.",
    r#"{"note":"{v}","n":1}"#,
    "({v})",
    "invalid type: string \"{v}\", expected u32",
    "https://api.example.com/v1/{v}/items",
];

/// Authorization schemes with their credential, in the places a server echoes them.
fn scheme_cases() -> Vec<(String, &'static str)> {
    let mut cases = Vec::new();
    for credential in [
        "SECRET-AT-xyz123",
        "s3cr3t",
        "abcDEF",
        "YWxhZGRpbjpvcGVuc2VzYW1l",
    ] {
        for context in [
            "Authorization: Bearer {v}",
            "authorization=Bearer {v}",
            "bearer={v}",
            "Bearer {v}",
            "BEARER {v} is expired",
            "DPoP {v}",
            "Basic {v}",
            r#"{"Authorization":"Bearer {v}"}"#,
        ] {
            cases.push((context.replace("{v}", credential), credential));
        }
    }
    cases
}

/// Texts the issue quoted, verbatim.
fn reported_cases() -> Vec<(String, Vec<&'static str>)> {
    vec![
        (
            "access_token=AT-123abc&refresh_token=RT-456def&token_type=bearer".into(),
            vec!["AT-123abc", "RT-456def"],
        ),
        (
            "GET /cb?access_token=AT-123abc&x=1 failed".into(),
            vec!["AT-123abc"],
        ),
        (
            r#"{"access_token":"abc123def456"#.into(),
            vec!["abc123def456"],
        ),
        (
            r#"invalid type: string "AT-123abc", expected a map"#.into(),
            vec!["AT-123abc"],
        ),
        (
            "unknown variant `AT-123abc`, expected one of `a`, `b`".into(),
            vec!["AT-123abc"],
        ),
        (r#"{"password": 12345678}"#.into(), vec!["12345678"]),
        (
            r#"{"pin": 4321, "code": 987654}"#.into(),
            vec!["4321", "987654"],
        ),
        (
            r#"{"tokens": ["AT-1a2b3c", "AT-4d5e6f"]}"#.into(),
            vec!["AT-1a2b3c", "AT-4d5e6f"],
        ),
        (
            r#"{"password": "correct horse battery staple"}"#.into(),
            vec!["horse", "battery", "staple"],
        ),
        (
            "Set-Cookie: SESSIONID=abc123xyz; Path=/; HttpOnly".into(),
            vec!["abc123xyz"],
        ),
        ("Cookie: theme=dark; sid=s-abc123".into(), vec!["s-abc123"]),
        (
            "redirect=https%3A%2F%2Fapp%2Fcb%3Faccess_token%3DAT-123abc%26x%3D1".into(),
            vec!["AT-123abc"],
        ),
        (
            "%7B%22access_token%22%3A%22AT-123abc%22%7D".into(),
            vec!["AT-123abc"],
        ),
        (
            "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            vec!["wJalrXUtnFEMI"],
        ),
        ("invalid token AT-123abc".into(), vec!["AT-123abc"]),
        ("password 'hunter' rejected".into(), vec!["hunter"]),
        ("密码：123456 错误".into(), vec!["123456"]),
        ("--password=hunter2".into(), vec!["hunter2"]),
        ("password: hunter".into(), vec!["hunter"]),
        (
            "refresh token: SECRET-RT-xyz123".into(),
            vec!["SECRET-RT-xyz123"],
        ),
    ]
}

fn check(text: &str, secret: &str, failures: &mut Vec<String>) {
    let shown = server_text(text, DEFAULT_CAP);
    if shown.contains(secret) {
        failures.push(format!("{secret:?} survives in {shown:?} (from {text:?})"));
    }
}

#[test]
fn no_credential_in_the_corpus_survives() {
    let mut cases = 0;
    let mut failures = Vec::new();
    let failures = &mut failures;
    for name in NAMES {
        for notation in NOTATIONS {
            let text = notation.replace("{n}", name).replace("{v}", VALUE);
            check(&text, VALUE, failures);
            cases += 1;
        }
        // A JSON number.
        check(&format!(r#"{{"{name}": 98765432}}"#), "98765432", failures);
        cases += 1;
    }
    for (label, shape) in shapes() {
        for context in SHAPE_CONTEXTS {
            let text = context.replace("{v}", &shape);
            // Any 12 characters of the shape would identify it.
            check(&text, &shape[shape.len() - 12..], failures);
            let _ = label;
            cases += 1;
        }
    }
    for (text, credential) in scheme_cases() {
        check(&text, credential, failures);
        cases += 1;
    }
    for (text, secrets) in reported_cases() {
        for secret in secrets {
            check(&text, secret, failures);
        }
        cases += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {cases}:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The issue counted 132 shape-and-context cases; the corpus is several times that.
    assert!(cases >= 132 * 5, "{cases}");
}

/// Texts that hold no credential and are kept as they are.
const BENIGN: [&str; 39] = [
    "",
    "name must not be empty",
    "token expired",
    "The access token expired",
    "invalid bearer token",
    "Bearer token is missing",
    "the password is too short",
    "field user.password is required",
    "user.name must not be empty",
    "see https://api.example.com/v1/items/1234567890/attachments/0987654321",
    "version 1.2.3 is not supported",
    // A business code is not an authorization code: five digits or fewer are kept.
    "code=40009 token expired",
    r#"{"code":40009,"message":"token expired","result":null}"#,
    "status code 404",
    "用户没有权限（令牌、用户名、密码错误）!",
    "请求失败：服务器繁忙，请稍后再试",
    "order 2024-01-01-0001 not found",
    "user_profile_settings_v2 is missing",
    "GET /api/v1/users/42 returned 404",
    "host api.example.com:443 unreachable",
    "error=invalid_grant",
    r#"{"error":"invalid_grant","error_description":"refresh token expired"}"#,
    "token_type=bearer&expires_in=3600",
    r#"Bearer realm="api", error="invalid_token""#,
    "Session expired, log in again",
    "rate limit exceeded, retry after 3 seconds",
    "author=bob&page=2",
    "primaryKey: id",
    "idempotency-key: 42",
    "getUserProfileSettingsForAccount failed",
    "trace 4bf92f3577b34da6",
    "expected `,` or `}` at line 1 column 5",
    r#"{"password":null,"remember":true}"#,
    "connection refused (os error 111)",
    "100% of 2 attempts failed",
    "see RFC 6749 section 5.2",
    // The library's own sentences.
    "there is no refresh token: log in first",
    "the token URL must be an absolute http or https URL",
    "invalid value for header `authorization`: failed to parse header value",
];

#[test]
fn benign_texts_survive_unchanged() {
    let changed: Vec<String> = BENIGN
        .iter()
        .map(|text| (text, server_text(text, DEFAULT_CAP)))
        .filter(|(text, shown)| **text != shown)
        .map(|(text, shown)| format!("{text:?} -> {shown:?}"))
        .collect();
    assert!(changed.is_empty(), "{}", changed.join("\n"));
}

#[test]
fn masks_jwts_anywhere_in_a_word() {
    assert_eq!(mask(JWT), "REDACTED");
    assert_eq!(
        mask(&format!("token '{JWT}' is expired")),
        "token 'REDACTED' is expired"
    );
    assert_eq!(mask(&format!("x={JWT},")), "x=REDACTED,");
    assert_eq!(
        mask("eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0. ok"),
        "REDACTED ok"
    );
}

#[test]
fn names_keep_their_spelling_and_lose_their_values() {
    assert_eq!(
        mask("access_token=abc&page=2 client_secret=s3"),
        "access_token=REDACTED&page=2 client_secret=REDACTED"
    );
    assert_eq!(
        mask(r#"{"user":"bob","accessToken":"abc","n":3}"#),
        r#"{"user":"bob","accessToken":"REDACTED","n":3}"#
    );
    assert_eq!(
        mask("Authorization: Bearer abc.def.ghi"),
        "Authorization: Bearer REDACTED"
    );
    assert_eq!(
        mask("<password>x</password>"),
        "<password>REDACTED</password>"
    );
    assert_eq!(
        mask(r#"{"tokens":["a","b"],"n":1}"#),
        r#"{"tokens":[REDACTED],"n":1}"#
    );
}

#[test]
fn invisible_and_control_characters_never_split_a_secret() {
    let guard = KnownSecret::register("KNOWN-secret-value-1");
    for text in [
        "access\u{200b}_token=abc123",
        "acc\u{2060}essToken: abc123",
        "Bearer\u{feff} abc123",
        "K\u{200b}NOWN-sec\u{061c}ret-val\u{7}ue-1",
        "KNOWN-secret-\u{202e}value-1",
    ] {
        let shown = server_text(text, DEFAULT_CAP);
        assert!(
            !shown.contains("abc123") && !shown.contains("value"),
            "{shown}"
        );
    }
    let split_jwt: String = JWT.chars().flat_map(|c| [c, '\u{200b}']).collect();
    assert_eq!(server_text(&split_jwt, DEFAULT_CAP), "REDACTED");
    drop(guard);
}

#[test]
fn a_known_secret_is_scrubbed_before_the_cap_cuts_it() {
    let secret = "straddle-0123-known-value";
    let guard = KnownSecret::register(secret);
    let cap = 64;
    for before in 40..cap {
        let text = format!("{} {secret} tail", "x".repeat(before));
        let shown = server_text(&text, cap);
        assert!(shown.len() <= cap);
        assert!(!shown.contains("straddle"), "{before}: {shown}");
    }
    drop(guard);
}

#[test]
fn known_secrets_are_found_percent_encoded_and_json_escaped() {
    let guard = KnownSecret::register("s3cr3t/v@lue 42");
    for text in [
        "client_id=a&x=s3cr3t%2Fv%40lue+42",
        r#"{"note":"s3cr3t\/v@lue 42"}"#,
        "echo s3cr3t/v@lue 42!",
    ] {
        let shown = server_text(text, DEFAULT_CAP);
        assert!(
            !shown.contains("v@lue") && !shown.contains("v%40lue"),
            "{shown}"
        );
    }
    drop(guard);
}

#[test]
fn a_message_is_capped_in_characters_with_an_ellipsis() {
    let capped = server_message(&"é".repeat(10_000), 256).unwrap();
    assert_eq!(capped.chars().count(), 256);
    assert!(capped.ends_with('…'));
    let exact = "b".repeat(256);
    assert_eq!(server_message(&exact, 256).unwrap(), exact);
    let spaced = "a ".repeat(128);
    assert_eq!(server_message(&spaced, 256).unwrap(), spaced.trim_end());
    assert_eq!(server_message("anything", 0), None);
}

#[test]
fn a_token_in_a_message_is_masked_even_where_the_cap_cuts() {
    let text = format!("{} {JWT}", "x".repeat(250));
    let shown = server_message(&text, 256).unwrap();
    assert!(!shown.contains("eyJ"), "{shown}");
}

#[test]
fn a_word_at_the_end_of_the_window_is_read_whole_or_dropped() {
    // A word longer than the extra read: dropped, never shown in part.
    let text = format!("a {}", "ab".repeat(700_000));
    assert_eq!(server_text(&text, 64), "a");
    // A long word of prose is read whole, and the cap cuts it.
    let text = format!("first line {}", "x".repeat(100_000));
    assert_eq!(server_text(&text, 20), "first line xxxxxxxxx");
    // A credential shape at the window's end: the part read must not come out, even when
    // everything before it is masked down to nothing.
    let cap = 16;
    let window = cap * 4 + 4096;
    let filler = "pwd=".to_string() + &"y".repeat(window - 20);
    let text = format!("{filler} {}", "Zx81kPq0LmN2vB7cR4tY9wE3sD6fG5hJ".repeat(4));
    let shown = server_text(&text, cap);
    assert!(!shown.contains("Zx81"), "{shown}");
    assert!(shown.len() <= cap);
}

#[test]
fn megabytes_of_text_are_read_only_up_to_the_window() {
    let text = "a ".repeat(4 << 20);
    let started = std::time::Instant::now();
    let shown = server_text(&text, 1024);
    assert!(shown.len() <= 1024);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let invisible = "\u{200b}".repeat(1 << 20) + "token=abc";
    assert_eq!(server_text(&invisible, 1024), "token=REDACTED");
}

#[test]
fn clean_removes_controls_bidi_and_invisible_characters() {
    assert_eq!(
        clean("  line one\r\n\tline\u{1b}[31m two\u{0}\u{202E}  "),
        "line one line[31m two"
    );
    assert_eq!(clean("a\u{2028}b\u{85}c\u{2066}d\u{e0041}"), "a b cd");
    assert_eq!(clean("\u{7}\n\u{202E}"), "");
}

fn is_forbidden(c: char) -> bool {
    (c.is_control()) || is_invisible(c) || (c.is_whitespace() && c != ' ')
}

proptest::proptest! {
    #[test]
    fn never_panics_and_never_exceeds_the_cap(text in "\\PC{0,200}", cap in 0usize..300) {
        let shown = server_text(&text, cap);
        proptest::prop_assert!(shown.len() <= cap);
        proptest::prop_assert!(!shown.chars().any(is_forbidden), "{:?}", shown);
    }

    #[test]
    fn arbitrary_characters_never_make_it_panic(text in proptest::collection::vec(proptest::char::any(), 0..200)) {
        let text: String = text.into_iter().collect();
        let shown = server_text(&text, 128);
        proptest::prop_assert!(shown.len() <= 128);
        proptest::prop_assert!(!shown.chars().any(is_forbidden), "{:?}", shown);
    }

    #[test]
    fn a_registered_secret_never_survives(
        secret in "[A-Za-z0-9_-]{6,40}",
        prefix in "\\PC{0,40}",
        suffix in "\\PC{0,40}",
        inserts in proptest::collection::vec(
            (0usize..40, proptest::sample::select(vec!['\u{200b}', '\u{200d}', '\u{061c}', '\u{202e}', '\u{2066}', '\u{feff}', '\u{7}', '\u{1b}', '\u{ad}'])),
            0..6,
        ),
        cap in 8usize..200,
    ) {
        proptest::prop_assume!(!secret.contains("REDACTED") && !"REDACTED".contains(secret.as_str()));
        let guard = KnownSecret::register(&secret);
        let mut chars: Vec<char> = secret.chars().collect();
        for (at, c) in inserts {
            let at = at % (chars.len() + 1);
            chars.insert(at, c);
        }
        let disguised: String = chars.into_iter().collect();
        let text = format!("{prefix}{disguised}{suffix}");
        let shown = server_text(&text, cap);
        drop(guard);
        let survived = shown.contains(&secret) && !format!("{prefix}{suffix}").contains(&secret);
        proptest::prop_assert!(!survived, "{:?} -> {:?}", text, shown);
    }

    #[test]
    fn a_jwt_never_survives(prefix in "[ -~]{0,20}", suffix in "[ -~]{0,20}") {
        let shown = server_text(&format!("{prefix} {JWT} {suffix}"), DEFAULT_CAP);
        proptest::prop_assert!(!shown.contains("SflKxwRJSMeKKF2QT4fw"), "{}", shown);
    }

    #[test]
    fn a_named_value_never_survives(
        name in proptest::sample::select(NAMES.to_vec()),
        notation in proptest::sample::select(NOTATIONS.to_vec()),
        value in "[A-Za-z0-9][A-Za-z0-9_.~-]{7,30}",
    ) {
        let text = notation.replace("{n}", name).replace("{v}", &value);
        let shown = server_text(&text, DEFAULT_CAP);
        proptest::prop_assert!(!shown.contains(&value), "{:?} -> {:?}", text, shown);
    }
}
