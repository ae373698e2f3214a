//! Which burn backend and processor a run trains on (`hardy train --backend --device`).
//!
//! The model code is written once against burn's `Device`, which dispatches every operation to
//! the backend it names: `flex`, burn's pure-Rust CPU backend, always built; or `tch`, LibTorch
//! (PyTorch's kernels, CPU and CUDA), built with the cargo feature `tch`. Weights, checkpoints
//! and exports do not depend on the backend that trained them.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use crate::TrainerError;

/// A burn backend Hardy can train on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// burn's pure-Rust CPU backend.
    #[default]
    Flex,
    /// LibTorch through burn-tch (the `tch` cargo feature).
    Tch,
}

/// Where a backend runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Processor {
    /// The host CPU.
    #[default]
    Cpu,
    /// The CUDA device of this index.
    Cuda(usize),
}

/// A backend on a processor: what [`TrainDevice::device`] turns into burn's `Device`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrainDevice {
    /// The backend.
    pub backend: Backend,
    /// The processor it runs on.
    pub processor: Processor,
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "flex" => Ok(Self::Flex),
            "tch" => Ok(Self::Tch),
            other => Err(format!("unknown backend `{other}` (expected flex or tch)")),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flex => "flex",
            Self::Tch => "tch",
        })
    }
}

impl FromStr for Processor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(index)) => Ok(Self::Cuda(index)),
                _ => Err(format!("unknown device `{other}` (expected cpu, cuda or cuda:N)")),
            },
        }
    }
}

impl fmt::Display for Processor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl fmt::Display for TrainDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.backend, self.processor)
    }
}

impl TrainDevice {
    /// LibTorch on the CPU.
    pub const TCH_CPU: Self = Self {
        backend: Backend::Tch,
        processor: Processor::Cpu,
    };

    /// burn's `Device` for this backend and processor, or why this build or machine cannot
    /// give it (no `tch` feature, flex asked for CUDA, no such CUDA device).
    pub fn device(&self) -> Result<Device, TrainerError> {
        let unavailable = |reason: String| TrainerError::DeviceUnavailable {
            device: self.to_string(),
            reason,
        };
        match (self.backend, self.processor) {
            (Backend::Flex, Processor::Cpu) => Ok(Device::flex()),
            (Backend::Flex, Processor::Cuda(_)) => Err(unavailable(
                "the flex backend runs on the CPU only; use --backend tch for CUDA".into(),
            )),
            (Backend::Tch, processor) => tch_device(processor).map_err(unavailable),
        }
    }
}

/// LibTorch's device. burn 0.22 marks burn-tch deprecated (in favour of its CubeCL backends,
/// whose CUDA build downloads LLVM at build time and cannot be built here); it is still
/// maintained in 0.22 and is the way to PyTorch's kernels.
#[cfg(feature = "tch")]
#[allow(deprecated)]
fn tch_device(processor: Processor) -> Result<Device, String> {
    match processor {
        Processor::Cpu => Ok(Device::libtorch()),
        Processor::Cuda(index) => {
            let count = tch::Cuda::device_count().max(0) as usize;
            if index < count {
                Ok(Device::libtorch_cuda(index))
            } else if count == 0 {
                Err(
                    "LibTorch sees no CUDA device (no GPU or driver here, or the libtorch loaded is \
                     the CPU one of scripts/torch-env.sh)"
                        .into(),
                )
            } else {
                Err(format!("LibTorch sees {count} CUDA device(s), numbered from 0"))
            }
        }
    }
}

#[cfg(not(feature = "tch"))]
fn tch_device(_: Processor) -> Result<Device, String> {
    Err("this build has no LibTorch backend: build with the `tch` feature \
         (scripts/with-libtorch.sh cargo build --release --features tch)"
        .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_and_processors_parse_and_print() {
        assert_eq!("flex".parse::<Backend>().unwrap(), Backend::Flex);
        assert_eq!("tch".parse::<Backend>().unwrap(), Backend::Tch);
        assert!("torch".parse::<Backend>().unwrap_err().contains("flex or tch"));
        assert_eq!("cpu".parse::<Processor>().unwrap(), Processor::Cpu);
        assert_eq!("cuda".parse::<Processor>().unwrap(), Processor::Cuda(0));
        assert_eq!("cuda:3".parse::<Processor>().unwrap(), Processor::Cuda(3));
        for bad in ["cuda:", "cuda:-1", "cuda:x", "gpu", ""] {
            assert!(bad.parse::<Processor>().is_err(), "{bad}");
        }
        assert_eq!(TrainDevice::TCH_CPU.to_string(), "tch on cpu");
        assert_eq!(Processor::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn libtorch_and_unavailable_devices_say_why() {
        let flex_cuda = TrainDevice {
            backend: Backend::Flex,
            processor: Processor::Cuda(0),
        };
        let err = flex_cuda.device().unwrap_err().to_string();
        assert!(err.contains("flex on cuda:0") && err.contains("--backend tch"), "{err}");
        assert!(TrainDevice::default().device().is_ok());
        let tch = TrainDevice::TCH_CPU.device();
        if cfg!(feature = "tch") {
            assert!(tch.is_ok());
            // The CPU-only libtorch of the tests has no CUDA device.
            let cuda = TrainDevice {
                backend: Backend::Tch,
                processor: Processor::Cuda(0),
            };
            let err = cuda.device().unwrap_err().to_string();
            assert!(err.contains("CUDA device"), "{err}");
        } else {
            let err = tch.unwrap_err().to_string();
            assert!(err.contains("`tch` feature"), "{err}");
        }
    }
}
