//! Ending a `KVM_RUN` at the end of a time slice. A guest that computes without touching a
//! device never exits to userspace by itself, but crane86's timers and serial input are
//! serviced between engine slices. A POSIX timer delivers [`kick_signal`] to the vCPU
//! thread when the slice ends; the handler sets `kvm_run.immediate_exit`, so a kick that
//! lands while the thread is in userspace (handling an I/O exit) still ends the next
//! `KVM_RUN` at once instead of being lost (the race QEMU's `kvm_cpu_kick` closes the same
//! way).

use std::cell::Cell;
use std::sync::Once;
use std::time::Duration;

thread_local! {
    /// This thread's `kvm_run.immediate_exit` byte while a slice runs (null otherwise).
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// The real-time signal used for kicks.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

extern "C" fn on_kick(_: libc::c_int) {
    // Only touches a thread-local `Cell` of a raw pointer (const-initialised, no destructor):
    // async-signal-safe.
    let p = IMMEDIATE_EXIT.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: the pointer is set by `Kicker::arm` to this thread's mapped kvm_run page,
        // which outlives the armed slice (it is cleared in `disarm` before the page can go).
        unsafe { std::ptr::write_volatile(p, 1) };
    }
}

fn install_handler() -> std::io::Result<()> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler is an
        // `extern "C" fn(c_int)` and SA_RESTART is deliberately not set, so KVM_RUN returns
        // EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(kick_signal(), &sa, std::ptr::null_mut()) != 0 {
                result = Err(std::io::Error::last_os_error());
            }
        }
    });
    result
}

/// A one-shot timer that signals the thread that created it.
pub struct Kicker {
    timer: libc::timer_t,
    /// The thread the timer targets.
    tid: libc::pid_t,
}

impl Kicker {
    pub fn new() -> std::io::Result<Kicker> {
        install_handler()?;
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        // SAFETY: sigevent is plain data; SIGEV_THREAD_ID with this thread's id is the
        // documented way to target one thread; `timer` is written by timer_create.
        unsafe {
            let mut ev: libc::sigevent = std::mem::zeroed();
            ev.sigev_notify = libc::SIGEV_THREAD_ID;
            ev.sigev_signo = kick_signal();
            ev.sigev_notify_thread_id = tid;
            let mut timer: libc::timer_t = std::ptr::null_mut();
            if libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut timer) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Kicker { timer, tid })
        }
    }

    /// True when the calling thread is the one this timer signals.
    pub fn on_this_thread(&self) -> bool {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() == self.tid }
    }

    fn set(&self, after: Duration) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `timer` is a live timer of this process; `spec` is valid.
        let rc = unsafe { libc::timer_settime(self.timer, 0, &spec, std::ptr::null_mut()) };
        debug_assert_eq!(rc, 0, "timer_settime");
    }

    /// Start a slice of `len`; the kick sets `*immediate_exit` (this thread's kvm_run).
    pub fn arm(&self, len: Duration, immediate_exit: *mut u8) {
        IMMEDIATE_EXIT.with(|c| c.set(immediate_exit));
        self.set(len.max(Duration::from_micros(1)));
    }

    /// End the slice: no kick can arrive afterwards.
    pub fn disarm(&self) {
        self.set(Duration::ZERO);
        IMMEDIATE_EXIT.with(|c| c.set(std::ptr::null_mut()));
    }
}

impl Drop for Kicker {
    fn drop(&mut self) {
        // SAFETY: the timer was created by timer_create and is deleted once.
        unsafe { libc::timer_delete(self.timer) };
    }
}
