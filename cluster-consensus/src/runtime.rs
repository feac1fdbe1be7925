//! openraft's async runtime: tokio, as openraft's own [`TokioRuntime`], except
//! that the random numbers behind election timeouts can be seeded per thread.
//!
//! openraft 0.9 draws each election timeout from
//! [`AsyncRuntime::thread_rng`]. A deterministic simulation runs every member
//! on one thread and calls [`seed_thread_rng`] first; every other thread
//! (every real member) draws from the operating system's entropy, as before.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};
use rand08::rngs::StdRng;
use rand08::{RngCore, SeedableRng};

thread_local! {
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Seeds the election-timeout randomness of raft members on this thread
/// (`None`: back to the operating system's entropy).
pub fn seed_thread_rng(seed: Option<u64>) {
    SEEDED.with(|r| *r.borrow_mut() = seed.map(StdRng::seed_from_u64));
}

/// The random numbers of [`Runtime::thread_rng`]: the thread's seeded
/// generator when there is one, else the operating system's.
pub struct ThreadRng(Option<rand08::rngs::ThreadRng>);

impl ThreadRng {
    fn with<T>(&mut self, f: impl Fn(&mut dyn RngCore) -> T) -> T {
        if let Some(os) = &mut self.0 {
            return f(os);
        }
        SEEDED.with(|r| match r.borrow_mut().as_mut() {
            Some(seeded) => f(seeded),
            None => f(&mut rand08::thread_rng()),
        })
    }
}

impl RngCore for ThreadRng {
    fn next_u32(&mut self) -> u32 {
        self.with(|r| r.next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        self.with(|r| r.next_u64())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if let Some(os) = &mut self.0 {
            return os.fill_bytes(dest);
        }
        SEEDED.with(|r| match r.borrow_mut().as_mut() {
            Some(seeded) => seeded.fill_bytes(dest),
            None => rand08::thread_rng().fill_bytes(dest),
        })
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand08::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// Tokio, with [`ThreadRng`] for election timeouts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Runtime;

type Tokio = TokioRuntime;

impl AsyncRuntime for Runtime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tokio as AsyncRuntime>::Sleep;
    type Instant = <Tokio as AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tokio as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = ThreadRng;
    type OneshotSender<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <Tokio as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Tokio::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tokio::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        let seeded = SEEDED.with(|r| r.borrow().is_some());
        ThreadRng(if seeded { None } else { Some(rand08::thread_rng()) })
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        Tokio::oneshot()
    }
}
