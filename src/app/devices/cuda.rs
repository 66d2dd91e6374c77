//! Whether the CUDA backend can start here: loads the NVIDIA driver library and asks it for
//! its version and GPUs, as cudarc would, but returning the reason instead of panicking.

use std::ffi::{CStr, c_char, c_int, c_uint};
use std::sync::OnceLock;

use libloading::{Library, Symbol};

/// The driver library cudarc loads (it tries more spellings; these are the ones drivers ship).
#[cfg(windows)]
const DRIVER_NAMES: &[&str] = &["nvcuda.dll"];
#[cfg(not(windows))]
const DRIVER_NAMES: &[&str] = &["libcuda.so.1", "libcuda.so"];

/// The CUDA API version cudarc was built for (`CUDARC_CUDA_VERSION`, e.g. 13000); the driver
/// must support at least that. Unset means cudarc picked its newest, which is not checked.
const BUILT_FOR: Option<&str> = option_env!("CUDARC_CUDA_VERSION");

const INSTALL: &str = "install the NVIDIA driver (it provides libcuda.so.1) or put its \
                       directory on LD_LIBRARY_PATH";

type CuResult = c_int;

/// The probe's answer, kept: the driver stays loaded (unloading it after `cuInit` is unsafe)
/// and a second `--device` check asks nothing again.
static PROBED: OnceLock<(Option<Library>, Result<String, String>)> = OnceLock::new();

/// "NVIDIA H200 (driver: CUDA 13.0)" when the driver opens at least one GPU, else why not.
pub fn probe() -> Result<String, String> {
    PROBED
        .get_or_init(|| match load() {
            Ok(lib) => {
                // SAFETY: the symbols are the CUDA driver API's, called with its signatures.
                let found = unsafe { query(&lib) };
                (Some(lib), found)
            }
            Err(e) => (None, Err(e)),
        })
        .1
        .clone()
}

fn load() -> Result<Library, String> {
    let mut last = String::new();
    for name in DRIVER_NAMES {
        // SAFETY: loading the driver runs its initialisers, as cudarc's own loading would.
        match unsafe { Library::new(*name) } {
            Ok(lib) => return Ok(lib),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!(
        "no NVIDIA driver found ({} could not be loaded: {last}); {INSTALL}",
        DRIVER_NAMES.join(" / ")
    ))
}

unsafe fn symbol<'l, T>(lib: &'l Library, name: &str) -> Result<Symbol<'l, T>, String> {
    // SAFETY: the caller names a driver API function and its type.
    unsafe { lib.get(name.as_bytes()) }
        .map_err(|e| format!("the NVIDIA driver lacks {name} ({e}); update the driver"))
}

unsafe fn query(lib: &Library) -> Result<String, String> {
    type Init = unsafe extern "C" fn(c_uint) -> CuResult;
    type GetInt = unsafe extern "C" fn(*mut c_int) -> CuResult;
    type DeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> CuResult;
    type DeviceName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> CuResult;
    type ErrorName = unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult;
    // SAFETY (whole body): each symbol is called with the driver API's signature, on buffers
    // and out-pointers that live across the call.
    unsafe {
        let error_name: Symbol<ErrorName> = symbol(lib, "cuGetErrorName")?;
        let fail = |call: &str, rc: CuResult| {
            let mut name: *const c_char = std::ptr::null();
            let text = if error_name(rc, &mut name) == 0 && !name.is_null() {
                CStr::from_ptr(name).to_string_lossy().into_owned()
            } else {
                format!("error {rc}")
            };
            format!("the NVIDIA driver found no usable GPU ({call}: {text}); check `nvidia-smi`")
        };
        let init: Symbol<Init> = symbol(lib, "cuInit")?;
        let rc = init(0);
        if rc != 0 {
            return Err(fail("cuInit", rc));
        }
        let driver_version: Symbol<GetInt> = symbol(lib, "cuDriverGetVersion")?;
        let mut version = 0;
        let rc = driver_version(&mut version);
        if rc != 0 {
            return Err(fail("cuDriverGetVersion", rc));
        }
        if let Some(built) = BUILT_FOR.and_then(|v| v.parse::<c_int>().ok())
            && version < built
        {
            return Err(format!(
                "the NVIDIA driver supports CUDA {}, this binary was built for CUDA {} \
                 (CUDARC_CUDA_VERSION={built}); update the driver or rebuild with \
                 CUDARC_CUDA_VERSION={version}",
                cuda_version(version),
                cuda_version(built)
            ));
        }
        let count_fn: Symbol<GetInt> = symbol(lib, "cuDeviceGetCount")?;
        let mut count = 0;
        let rc = count_fn(&mut count);
        if rc != 0 {
            return Err(fail("cuDeviceGetCount", rc));
        }
        if count < 1 {
            return Err(fail("cuDeviceGetCount", 100));
        }
        let device_get: Symbol<DeviceGet> = symbol(lib, "cuDeviceGet")?;
        let device_name: Symbol<DeviceName> = symbol(lib, "cuDeviceGetName")?;
        let mut names = Vec::new();
        for ordinal in 0..count {
            let mut dev = 0;
            let mut buf = [0 as c_char; 256];
            if device_get(&mut dev, ordinal) == 0
                && device_name(buf.as_mut_ptr(), buf.len() as c_int, dev) == 0
            {
                names.push(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned());
            } else {
                names.push(format!("GPU {ordinal}"));
            }
        }
        Ok(format!(
            "{} (driver: CUDA {}; --device cuda uses GPU 0)",
            names.join(", "),
            cuda_version(version)
        ))
    }
}

/// 13000 -> "13.0".
fn cuda_version(v: c_int) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_as_cuda_writes_them() {
        assert_eq!(cuda_version(13000), "13.0");
        assert_eq!(cuda_version(12040), "12.4");
    }

    /// On any machine the probe answers (no panic): a GPU, or one line saying what is missing.
    #[test]
    fn probe_answers_in_one_line() {
        let answer = probe();
        let text = answer.as_ref().unwrap_or_else(|e| e);
        assert!(!text.is_empty() && !text.contains('\n'), "{text}");
        if libloading_finds_no_driver() {
            assert!(answer.unwrap_err().contains("no NVIDIA driver found"));
        }
    }

    fn libloading_finds_no_driver() -> bool {
        // SAFETY: as in `load`.
        DRIVER_NAMES
            .iter()
            .all(|n| unsafe { Library::new(*n) }.is_err())
    }
}
