//! Where inference runs: `cpu` or `cuda[:N]`, and what to do when CUDA cannot be used.
//!
//! ONNX Runtime silently falls back to CPU when an execution provider fails to register. Hardy
//! registers CUDA with `error_on_failure` and then decides explicitly ([`DevicePolicy`]), so
//! the device a session actually runs on is always known and reported.

use std::{fmt, str::FromStr};

/// A device to run inference on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// The CUDA execution provider on the GPU with this index.
    Cuda(u32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A device string that is not `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, thiserror::Error)]
#[error("invalid device {0:?}: expected `cpu`, `cuda` or `cuda:N` (N a GPU index)")]
pub struct ParseDeviceError(String);

impl FromStr for Device {
    type Err = ParseDeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            _ => t
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<u32>().ok())
                .map(Device::Cuda)
                .ok_or_else(|| ParseDeviceError(s.to_string())),
        }
    }
}

/// What to do when the requested accelerator cannot be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePolicy {
    /// Log a warning with the provider's error and run on CPU (the default).
    #[default]
    FallBackToCpu,
    /// Stop with the provider's error.
    Strict,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("CUDA".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("cuda:3".parse::<Device>().unwrap(), Device::Cuda(3));
        assert_eq!(Device::Cuda(3).to_string(), "cuda:3");
        for bad in ["", "tpu", "cuda:", "cuda:-1", "cuda:x"] {
            let err = bad.parse::<Device>().unwrap_err().to_string();
            assert!(err.contains("expected `cpu`"), "{bad}: {err}");
        }
    }
}
