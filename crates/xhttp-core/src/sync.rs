//! Locks that outlive a panic.
//!
//! A `std::sync::Mutex` is poisoned when a thread panics while holding it, and every later
//! `lock()` returns an error. The xhttp layers keep only small shared state behind their locks
//! (a token slot, a map of flights, a ring of records), and each critical section is a few
//! assignments or collection operations with no call that can panic halfway, so the data is
//! consistent even after such a panic. Refusing every later request because one caller
//! panicked would turn one bug into an outage; [`lock`] recovers the guard instead.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, recovering the guard if a panic poisoned it.
///
/// Use it only where every critical section leaves the data consistent at each step (a single
/// assignment, a push, a map insert), so that a poisoned lock still guards sound state.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use xhttp_core::sync::lock;
///
/// let shared = Arc::new(Mutex::new(vec![1]));
/// let poisoner = Arc::clone(&shared);
/// let _ = std::thread::spawn(move || {
///     let _guard = poisoner.lock().unwrap();
///     panic!("a caller panics while holding the lock");
/// })
/// .join();
/// assert!(shared.is_poisoned());
///
/// lock(&shared).push(2);
/// assert_eq!(*lock(&shared), [1, 2]);
/// ```
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
