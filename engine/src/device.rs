//! Where inference runs: `cpu` or `cuda[:N]`, and what to do when CUDA cannot be used.
//!
//! ONNX Runtime silently falls back to CPU when an execution provider fails to register. Hardy
//! registers CUDA with `error_on_failure` and then decides explicitly ([`DevicePolicy`]), so
//! the device a session actually runs on is always known and reported.

use std::{fmt, str::FromStr};

use crate::runtime::Flavor;

/// A device to run inference on. Parsed once, where it enters (a flag, a config file), from
/// `cpu`, `cuda`, `gpu` or `cuda:N`, case-insensitively; everything downstream, the ONNX
/// Runtime flavour included ([`Device::flavor`]), is derived from the parsed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
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

impl Device {
    /// The ONNX Runtime build this device needs: the GPU build for any CUDA device.
    pub fn flavor(self) -> Flavor {
        match self {
            Device::Cpu => Flavor::Cpu,
            Device::Cuda(_) => Flavor::Gpu,
        }
    }
}

/// A device string that is not `cpu`, `cuda`, `gpu` or `cuda:N`.
#[derive(Debug, thiserror::Error)]
#[error("invalid device {0:?}: expected `cpu`, `cuda` (or `gpu`) or `cuda:N` (N a GPU index)")]
pub struct ParseDeviceError(String);

impl TryFrom<String> for Device {
    type Error = ParseDeviceError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Device> for String {
    fn from(d: Device) -> String {
        d.to_string()
    }
}

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
        assert_eq!("gpu".parse::<Device>().unwrap(), Device::Cuda(0));
        for bad in ["", "tpu", "cuda:", "cuda:-1", "cuda:x"] {
            let err = bad.parse::<Device>().unwrap_err().to_string();
            assert!(err.contains("expected `cpu`"), "{bad}: {err}");
        }
    }

    /// Every spelling of a GPU loads the GPU build of ONNX Runtime (`--device gpu` once loaded
    /// the CPU build, because the CLI matched the text `cuda`).
    #[test]
    fn every_gpu_spelling_needs_the_gpu_runtime() {
        for gpu in ["gpu", "GPU", "cuda", "CUDA", "CUDA:0", "cuda:1", " cuda:2 "] {
            assert_eq!(gpu.parse::<Device>().unwrap().flavor(), Flavor::Gpu, "{gpu}");
        }
        assert_eq!("CPU".parse::<Device>().unwrap().flavor(), Flavor::Cpu);
        #[derive(serde::Deserialize)]
        struct Config {
            device: Device,
        }
        let c: Config = toml::from_str("device = \"GPU\"").unwrap();
        assert_eq!(c.device, Device::Cuda(0));
        let err = toml::from_str::<Config>("device = \"tpu\"").err().unwrap().to_string();
        assert!(err.contains("expected `cpu`"), "{err}");
    }
}
