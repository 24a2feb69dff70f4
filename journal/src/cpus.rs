//! Helpers for the start-up passes that want every core: a restarting
//! process may call them from a thread already pinned to one core, whose
//! affinity its new threads inherit (and `available_parallelism` honours).

/// Number of online CPUs, whatever the calling thread's affinity.
pub fn online() -> usize {
    // SAFETY: plain sysconf query.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.clamp(1, libc::CPU_SETSIZE as libc::c_long) as usize
}

/// Lets the calling thread run on every online CPU.
pub fn unpin_current_thread() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in
    // bounds for indices below CPU_SETSIZE (`online` clamps); the syscall
    // reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..online() {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
