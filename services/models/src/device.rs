//! Which device model code runs on, chosen by configuration (`--device` / `MMC_DEVICE`).
//!
//! One spelling for every model service, so a deployment switches a whole node pool from
//! CPU to GPU with one variable (the Kubernetes `gpu` overlay sets `MMC_DEVICE=cuda`):
//!
//! - `cpu` (the default): candle's CPU kernels, whisper.cpp's CPU backend;
//! - `cuda` or `cuda:N`: the N-th CUDA device (0 when omitted). Needs binaries built with
//!   the services' `cuda` feature (`docs/deploy.md`); a CPU-only build refuses it at start
//!   with a message saying so, instead of silently running on the CPU.

use std::{fmt, str::FromStr};

/// A device named in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The host CPU.
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal (as `CUDA_VISIBLE_DEVICES` numbers them).
    Cuda(usize),
}

/// Why a configured device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device {0:?}: expected cpu, cuda or cuda:N")]
    Parse(String),
    #[error("device {0} requested, but this binary was built without CUDA support: rebuild with the `cuda` feature (see docs/deploy.md) or set MMC_DEVICE=cpu")]
    NotCompiled(DeviceSpec),
    #[error("device {spec} cannot be opened: {message}")]
    Open { spec: DeviceSpec, message: String },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => t.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(DeviceSpec::Cuda).ok_or_else(|| DeviceError::Parse(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Whether the binary can use this device at all (CUDA needs the `cuda` feature).
    pub fn is_compiled_in(&self) -> bool {
        match self {
            DeviceSpec::Cpu => true,
            DeviceSpec::Cuda(_) => candle_core::utils::cuda_is_available(),
        }
    }

    /// The candle device. Opens a CUDA context, so call it once at load.
    pub fn candle(&self) -> Result<candle_core::Device, DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(candle_core::Device::Cpu),
            DeviceSpec::Cuda(_) if !self.is_compiled_in() => Err(DeviceError::NotCompiled(*self)),
            DeviceSpec::Cuda(n) => candle_core::Device::new_cuda(*n).map_err(|e| DeviceError::Open { spec: *self, message: e.to_string() }),
        }
    }

    /// The GPU ordinal, for engines that are not candle (whisper.cpp); `None` on CPU.
    pub fn gpu_ordinal(&self) -> Option<usize> {
        match self {
            DeviceSpec::Cpu => None,
            DeviceSpec::Cuda(n) => Some(*n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("CUDA".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn cuda_without_the_feature_is_refused_with_the_fix_named() {
        let spec = DeviceSpec::Cuda(0);
        if spec.is_compiled_in() {
            return; // a CUDA build: opening may legitimately succeed.
        }
        let err = spec.candle().unwrap_err().to_string();
        assert!(err.contains("`cuda` feature"), "{err}");
        assert!(DeviceSpec::Cpu.candle().unwrap().is_cpu());
    }
}
