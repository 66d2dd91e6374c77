//! Keeps freed memory in the process during training. A training step allocates and frees
//! the same multi-MiB activations, im2col blocks and gradients every step; with glibc's default
//! dynamic thresholds, buffers above the current mmap threshold are mapped and unmapped each
//! time and a freed heap top is trimmed, so every step pays page faults and kernel zeroing for
//! memory it had a moment ago (measured: a ResNet-20 step in the training bench at 134-167 img/s
//! with the defaults, 255 img/s with these settings, same minute).

/// Raises glibc's mmap threshold to its maximum (32 MiB) and stops trimming the heap top.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    unsafe extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    // SAFETY: mallopt only changes two allocation thresholds of glibc's malloc; any value is
    // valid (out-of-range ones are refused with a 0 return, which leaves the default).
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Other allocators keep their own defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}
