//! The one definition of what every xhttp service offers besides `Service`: the accessors of
//! the service it wraps (`get_ref`, `get_mut`, `into_inner`, as tower-http's services have).

/// Writes `get_ref`, `get_mut` and `into_inner` for a service that wraps another, so that
/// every xhttp service has the same three accessors with the same documentation.
///
/// Two forms:
///
/// - `impl<S, ...> Service<S, ...> { field: S }`: the wrapped service is the field `field`.
/// - `impl<S, ...> Service<S, ...> { type Inner = S; fn get_ref(this) { .. } fn get_mut(this)
///   { .. } fn into_inner(this) { .. } }`: the wrapped service is reached through another
///   wrapper; each body is an expression of `this` (the service, by reference, by mutable
///   reference, by value).
///
/// Used by the xhttp crates; not part of the API they promise.
///
/// ```
/// pub struct Logged<S> {
///     inner: S,
///     label: &'static str,
/// }
///
/// xhttp_core::inner_service_accessors! {
///     impl<S> Logged<S> { inner: S }
/// }
///
/// let mut logged = Logged { inner: 7_u32, label: "seven" };
/// *logged.get_mut() += 1;
/// assert_eq!(*logged.get_ref(), 8);
/// assert_eq!(logged.into_inner(), 8);
///
/// pub struct Nested<S> {
///     inner: (S, u8),
/// }
///
/// xhttp_core::inner_service_accessors! {
///     impl<S> Nested<S> {
///         type Inner = S;
///         fn get_ref(this) { &this.inner.0 }
///         fn get_mut(this) { &mut this.inner.0 }
///         fn into_inner(this) { this.inner.0 }
///     }
/// }
///
/// assert_eq!(Nested { inner: ("x", 1) }.into_inner(), "x");
/// ```
#[doc(hidden)]
#[macro_export]
macro_rules! inner_service_accessors {
    (impl<$($param:ident),+ $(,)?> $service:ty { $field:ident : $inner:ty $(,)? }) => {
        $crate::inner_service_accessors! {
            impl<$($param),+> $service {
                type Inner = $inner;
                fn get_ref(this) { &this.$field }
                fn get_mut(this) { &mut this.$field }
                fn into_inner(this) { this.$field }
            }
        }
    };
    (impl<$($param:ident),+ $(,)?> $service:ty {
        type Inner = $inner:ty;
        fn get_ref($ref_this:ident) $get_ref:block
        fn get_mut($mut_this:ident) $get_mut:block
        fn into_inner($own_this:ident) $into_inner:block
    }) => {
        impl<$($param),+> $service {
            /// The service this one wraps.
            pub fn get_ref(&self) -> &$inner {
                let $ref_this = self;
                $get_ref
            }

            /// The service this one wraps, mutably. The service that `poll_ready` made ready
            /// is the one `call` uses: replacing it between the two breaks tower's readiness
            /// contract.
            pub fn get_mut(&mut self) -> &mut $inner {
                let $mut_this = self;
                $get_mut
            }

            /// This service taken apart: the service it wraps.
            pub fn into_inner(self) -> $inner {
                let $own_this = self;
                $into_inner
            }
        }
    };
}
