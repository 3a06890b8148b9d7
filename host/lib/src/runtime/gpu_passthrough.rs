//! The host's GPUs handed into a process sandbox: exactly the `/dev/nvidia*` nodes the chosen
//! GPUs need and the driver's libraries as the host's loader cache names them. (The docker
//! runtime asks the engine for a device request instead, and the NVIDIA container toolkit mounts
//! the same.) Everything that reads the host is split from a pure function that decides, so the
//! decisions are tested without a GPU.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::closure::{is_driver_library, DRIVER_LIBRARY_DIR};
use crate::config::{is_index, Gpus};
use crate::error::GpuError;

/// The device nodes the worker needs for `gpus`, given the names present in `/dev` and the text
/// of each `/proc/driver/nvidia/gpus/*/information` (which maps UUIDs to minor numbers).
/// `/dev/nvidiactl` and `/dev/nvidia-uvm` always (the driver's control node and CUDA's unified
/// memory), then one `/dev/nvidia<minor>` per GPU; nothing else (no nvidia-uvm-tools, modeset or
/// caps: profiling, display and MIG are not needed to compute).
pub fn device_nodes(
    gpus: &Gpus,
    dev_entries: &[String],
    information: &[String],
) -> Result<Vec<String>, GpuError> {
    if gpus.is_none() {
        return Ok(Vec::new());
    }
    let present = |name: &str| dev_entries.iter().any(|e| e == name);
    let mut nodes = Vec::new();
    for name in ["nvidiactl", "nvidia-uvm"] {
        if !present(name) {
            return Err(GpuError::MissingNode(format!("/dev/{name}")));
        }
        nodes.push(format!("/dev/{name}"));
    }
    let mut minors: Vec<u32> = match gpus {
        Gpus::None => Vec::new(),
        Gpus::All => {
            let all: Vec<u32> = dev_entries
                .iter()
                .filter_map(|e| e.strip_prefix("nvidia"))
                .filter(|n| is_index(n))
                .filter_map(|n| n.parse().ok())
                .collect();
            if all.is_empty() {
                return Err(GpuError::NoGpus);
            }
            all
        }
        Gpus::Devices(devices) => devices
            .iter()
            .map(|device| {
                let minor = if is_index(device) {
                    device.parse().ok()
                } else {
                    information
                        .iter()
                        .find(|text| field(text, "GPU UUID").as_deref() == Some(device.as_str()))
                        .and_then(|text| field(text, "Device Minor"))
                        .and_then(|m| m.parse().ok())
                };
                match minor {
                    Some(minor) if present(&format!("nvidia{minor}")) => Ok(minor),
                    _ => Err(GpuError::UnknownDevice(device.clone())),
                }
            })
            .collect::<Result<_, _>>()?,
    };
    minors.sort_unstable();
    minors.dedup();
    nodes.extend(minors.iter().map(|m| format!("/dev/nvidia{m}")));
    Ok(nodes)
}

/// `Name:   value` lines of /proc/driver/nvidia/gpus/*/information.
fn field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_string())
    })
}

/// The driver's libraries the worker needs, from `ldconfig -p` output: libcuda.so.1, and where
/// present libnvidia-ptxjitcompiler.so.1 (libcuda loads it to compile PTX for a GPU newer than the
/// kernels' machine code) and libnvidia-nvvm.so.4 (likewise, for NVVM IR). 64-bit x86 entries
/// only; the first of each name, as the loader takes it. Returns (soname, host path).
pub fn driver_libraries(ldconfig_output: &str) -> Result<Vec<(String, PathBuf)>, GpuError> {
    let mut cache: BTreeMap<String, PathBuf> = BTreeMap::new();
    for line in ldconfig_output.lines() {
        let Some((left, path)) = line.split_once(" => ") else {
            continue;
        };
        let Some((name, tags)) = left.trim().split_once(' ') else {
            continue;
        };
        if !tags.contains("x86-64") || !is_driver_library(name) {
            continue;
        }
        cache
            .entry(name.to_string())
            .or_insert_with(|| PathBuf::from(path.trim()));
    }
    let mut libraries = Vec::new();
    for (name, required) in [
        ("libcuda.so.1", true),
        ("libnvidia-ptxjitcompiler.so.1", false),
        ("libnvidia-nvvm.so.4", false),
    ] {
        match cache.get(name) {
            Some(path) => libraries.push((name.to_string(), path.clone())),
            None if required => return Err(GpuError::MissingDriverLibrary(name.into())),
            None => {}
        }
    }
    Ok(libraries)
}

/// What of the host's GPUs the process runtime hands its jailer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Passthrough {
    /// Device nodes, bound read-write at the same path inside.
    pub devices: Vec<String>,
    /// The driver's libraries: (path inside the sandbox, host file), read-only.
    pub libraries: Vec<(String, PathBuf)>,
}

/// What the process runtime binds for `gpus` on this host: the device nodes, and the driver's
/// libraries found through the host's loader cache, placed in [`DRIVER_LIBRARY_DIR`].
pub fn host_passthrough(gpus: &Gpus) -> Result<Passthrough, GpuError> {
    if gpus.is_none() {
        return Ok(Passthrough::default());
    }
    let host = |what: &str, e: std::io::Error| GpuError::Host {
        what: what.into(),
        message: e.to_string(),
    };
    let dev_entries: Vec<String> = std::fs::read_dir("/dev")
        .map_err(|e| host("/dev", e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let information: Vec<String> = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .map(|dirs| {
            dirs.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path().join("information")).ok())
                .collect()
        })
        .unwrap_or_default();
    let nodes = device_nodes(gpus, &dev_entries, &information)?;
    let ldconfig = ["/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"]
        .iter()
        .find_map(|program| {
            std::process::Command::new(program)
                .arg("-p")
                .env_clear()
                .output()
                .ok()
                .filter(|o| o.status.success())
        })
        .ok_or_else(|| GpuError::Host {
            what: "the loader cache".into(),
            message: "ldconfig -p did not run".into(),
        })?;
    let libraries = driver_libraries(&String::from_utf8_lossy(&ldconfig.stdout))?
        .into_iter()
        .map(|(name, path)| {
            let real = path
                .canonicalize()
                .map_err(|e| host(&path.display().to_string(), e))?;
            Ok((format!("{DRIVER_LIBRARY_DIR}/{name}"), real))
        })
        .collect::<Result<Vec<_>, GpuError>>()?;
    Ok(Passthrough {
        devices: nodes,
        libraries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn picks_exactly_the_nodes_needed() {
        let entries = dev(&[
            "null",
            "nvidiactl",
            "nvidia-uvm",
            "nvidia-uvm-tools",
            "nvidia-modeset",
            "nvidia0",
            "nvidia1",
            "nvidia-caps",
        ]);
        assert_eq!(
            device_nodes(&Gpus::None, &entries, &[]).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            device_nodes(&Gpus::All, &entries, &[]).unwrap(),
            [
                "/dev/nvidiactl",
                "/dev/nvidia-uvm",
                "/dev/nvidia0",
                "/dev/nvidia1"
            ]
        );
        let info = vec![
            "Model: \t\t NVIDIA H200\nGPU UUID: \t GPU-aaaa-1\nDevice Minor: \t 1\n".to_string(),
        ];
        assert_eq!(
            device_nodes(&Gpus::Devices(vec!["GPU-aaaa-1".into()]), &entries, &info).unwrap(),
            ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia1"]
        );
        assert!(matches!(
            device_nodes(&Gpus::Devices(vec!["7".into()]), &entries, &info),
            Err(GpuError::UnknownDevice(_))
        ));
        assert!(matches!(
            device_nodes(&Gpus::All, &dev(&["nvidiactl", "nvidia0"]), &[]),
            Err(GpuError::MissingNode(_))
        ));
        assert!(matches!(
            device_nodes(&Gpus::All, &dev(&["nvidiactl", "nvidia-uvm"]), &[]),
            Err(GpuError::NoGpus)
        ));
    }

    #[test]
    fn finds_the_driver_in_the_loader_cache() {
        let ldconfig = "1234 libs found in cache `/etc/ld.so.cache'\n\
            \tlibnvidia-ptxjitcompiler.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ptxjitcompiler.so.1\n\
            \tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1\n\
            \tlibcuda.so.1 (libc6) => /usr/lib/i386-linux-gnu/libcuda.so.1\n\
            \tlibcuda.so (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so\n\
            \tlibc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6\n";
        assert_eq!(
            driver_libraries(ldconfig).unwrap(),
            [
                (
                    "libcuda.so.1".to_string(),
                    PathBuf::from("/usr/lib/x86_64-linux-gnu/libcuda.so.1")
                ),
                (
                    "libnvidia-ptxjitcompiler.so.1".to_string(),
                    PathBuf::from("/usr/lib/x86_64-linux-gnu/libnvidia-ptxjitcompiler.so.1")
                ),
            ]
        );
        assert!(matches!(
            driver_libraries("\tlibc.so.6 (libc6,x86-64) => /lib/libc.so.6\n"),
            Err(GpuError::MissingDriverLibrary(_))
        ));
    }
}
