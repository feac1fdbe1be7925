//! The operating system's randomness, replaced by the seed's while a
//! simulation runs on the current thread.
//!
//! Some randomness has no seam: chitchat 0.13 picks gossip peers with
//! `rand::rng()`, std's `HashMap`s iterate in an order keyed per thread from
//! the OS, tokio's `select!` draws its branch order from keys made the same
//! way. All of them reach the OS through the C library's `getrandom`
//! function. A simulation binary (the `simulate` example, the simulation
//! test) defines that symbol itself with [`interpose_getrandom!`]: a symbol
//! defined in the executable wins over the C library's at link time, so
//! every such call lands in [`fill`], which answers from a generator seeded
//! with the simulation's seed when one runs on this thread
//! ([`seed_thread`]), and otherwise lets the call through to the kernel.
//! madsim takes the same approach.
//!
//! A thread keeps what it drew (rand's thread generator, std's hash keys),
//! so [`super::simulate`] runs each seed on a new thread that draws first
//! from the seed.

use std::cell::Cell;

thread_local! {
    /// The SplitMix64 state of this thread's simulated randomness, if any.
    static STATE: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Makes [`fill`] on this thread draw from `seed` (`None`: from the OS).
pub fn seed_thread(seed: Option<u64>) {
    STATE.with(|s| s.set(seed.map(|seed| seed ^ 0x0065_6e74_726f_7079)));
}

/// True when [`fill`] on this thread draws from a seed.
pub fn seeded() -> bool {
    STATE.try_with(|s| s.get().is_some()).unwrap_or(false)
}

/// Fills `buf` from this thread's seeded generator; false (and `buf`
/// untouched) when no simulation runs on this thread. Allocates nothing and
/// calls nothing that could ask for randomness itself.
pub fn fill(buf: &mut [u8]) -> bool {
    let Ok(Some(mut x)) = STATE.try_with(|s| s.get()) else { return false };
    for chunk in buf.chunks_mut(8) {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
    let _ = STATE.try_with(|s| s.set(Some(x)));
    true
}

/// Defines the C library's `getrandom` in the binary that invokes it (once,
/// at the crate root of a simulation binary): it answers from [`fill`] while a
/// simulation runs on the calling thread, and from the kernel otherwise.
/// Linux only (elsewhere it expands to nothing).
#[macro_export]
macro_rules! interpose_getrandom {
    () => {
        /// The C library's `getrandom`, answered from the simulation's seed
        /// on a simulation thread (`integration_tests::sim::entropy`).
        ///
        /// # Safety
        /// As `getrandom(2)`: `buf` is valid for `len` bytes of writes.
        #[cfg(target_os = "linux")]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn getrandom(buf: *mut ::std::ffi::c_void, len: usize, flags: u32) -> isize {
            if !buf.is_null() && len > 0 {
                // SAFETY: the caller's contract (getrandom(2)).
                let bytes = unsafe { ::std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
                if $crate::sim::entropy::fill(bytes) {
                    return len as isize;
                }
            } else if $crate::sim::entropy::seeded() {
                return 0;
            }
            // SAFETY: the same arguments, to the kernel.
            unsafe { ::libc::syscall(::libc::SYS_getrandom, buf, len, flags) as isize }
        }
    };
}
