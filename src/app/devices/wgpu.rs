//! Whether the wgpu backend can start here: lists the adapters of the graphics APIs burn's
//! automatic device tries (Vulkan, then DX12, then GL; Metal on macOS), as it would find them.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use burn::backend::wgpu::graphics::AutoGraphicsApi;
use burn::backend::wgpu::wgpu;

const INSTALL: &str = "install a Vulkan driver (the GPU vendor's; on a machine without a GPU, \
                       Debian's mesa-vulkan-drivers and libvulkan1 give lavapipe), or Metal/DX12 \
                       on macOS/Windows";

/// "llvmpipe (LLVM 15.0.6, 256 bits) [Vulkan, Cpu]" for each adapter found, else why none.
pub fn probe() -> Result<String, String> {
    let mut found = Vec::new();
    let mut tried = Vec::new();
    for api in AutoGraphicsApi::chain() {
        if !wgpu::Instance::enabled_backend_features().contains(api.into()) {
            continue;
        }
        tried.push(api.to_str());
        // An instance limited to one API, dropped before burn makes its own.
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: api.into(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        for adapter in block_on(instance.enumerate_adapters(api.into())) {
            let info = adapter.get_info();
            found.push(format!(
                "{} [{}, {:?}{}]",
                info.name,
                info.backend,
                info.device_type,
                if info.driver.is_empty() {
                    String::new()
                } else {
                    format!(", {}", info.driver)
                }
            ));
        }
    }
    if found.is_empty() {
        Err(format!(
            "no graphics adapter found (tried {}); {INSTALL}",
            if tried.is_empty() {
                "no API: none compiled in".to_string()
            } else {
                tried.join(", ")
            }
        ))
    } else {
        Ok(found.join("; "))
    }
}

/// Runs a future to completion on this thread; adapter enumeration on native APIs is ready at
/// once, so this only polls (no executor crate needed).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}
