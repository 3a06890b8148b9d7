//! The GPUs the worker can see, and whether TensorFlow registered them.

use std::sync::OnceLock;

use tensorflow::{Graph, Session};
use tfsandbox_proto::v1::Gpu;

/// What Info reports: the GPUs, and whether TensorFlow registered any. Computed once: creating
/// a session makes TensorFlow initialise every GPU, which is slow and lasts for the process.
pub fn observe() -> (Vec<Gpu>, bool) {
    static SEEN: OnceLock<(Vec<Gpu>, bool)> = OnceLock::new();
    SEEN.get_or_init(|| {
        let driver = driver_gpus();
        let tensorflow = tensorflow_gpus();
        let registered = !tensorflow.is_empty();
        (merge(driver, tensorflow), registered)
    })
    .clone()
}

/// (bus id, model) of each GPU the NVIDIA driver reports, sorted by bus id. Empty without the
/// driver, or where /proc/driver/nvidia is not visible.
fn driver_gpus() -> Vec<(String, String)> {
    let Ok(dirs) = std::fs::read_dir("/proc/driver/nvidia/gpus") else {
        return Vec::new();
    };
    let mut gpus: Vec<(String, String)> = dirs
        .filter_map(|e| e.ok())
        .map(|e| {
            let bus = e.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(e.path().join("information")).unwrap_or_default();
            let model = text
                .lines()
                .find_map(|l| l.strip_prefix("Model:"))
                .map(|m| m.trim().to_string())
                .unwrap_or_default();
            (bus, model)
        })
        .collect();
    gpus.sort();
    gpus
}

/// (device name, memory bytes) of each GPU device of a fresh session, in TensorFlow's order.
fn tensorflow_gpus() -> Vec<(String, u64)> {
    let graph = Graph::new();
    let options = match crate::model::session_options() {
        Ok(options) => options,
        Err(error) => {
            tracing::warn!(%error, "listing TensorFlow's devices");
            return Vec::new();
        }
    };
    let devices = match Session::new(&options, &graph).and_then(|s| s.device_list()) {
        Ok(devices) => devices,
        Err(error) => {
            tracing::warn!(%error, "listing TensorFlow's devices");
            return Vec::new();
        }
    };
    devices
        .into_iter()
        .filter(|d| d.device_type == "GPU")
        .map(|d| (d.name, u64::try_from(d.memory_bytes).unwrap_or(0)))
        .collect()
}

/// One entry per GPU. TensorFlow's GPU:k is paired with the driver's k-th GPU in bus order only
/// when both list the same number (TensorFlow numbers them as CUDA does, which for identical GPUs
/// is bus order); otherwise each side's are reported unpaired.
fn merge(driver: Vec<(String, String)>, tensorflow: Vec<(String, u64)>) -> Vec<Gpu> {
    if driver.len() == tensorflow.len() {
        return driver
            .into_iter()
            .zip(tensorflow)
            .map(|((bus_id, model), (tf_device, memory_bytes))| Gpu {
                name: if model.is_empty() {
                    tf_device.clone()
                } else {
                    model
                },
                bus_id,
                tf_device,
                memory_bytes,
            })
            .collect();
    }
    let unregistered = driver.into_iter().map(|(bus_id, name)| Gpu {
        name,
        bus_id,
        ..Gpu::default()
    });
    let registered = tensorflow.into_iter().map(|(tf_device, memory_bytes)| Gpu {
        name: tf_device.clone(),
        tf_device,
        memory_bytes,
        ..Gpu::default()
    });
    unregistered.chain(registered).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_only_when_the_counts_agree() {
        let driver = vec![("0000:17:00.0".to_string(), "NVIDIA H200".to_string())];
        let tf = vec![(
            "/job:localhost/replica:0/task:0/device:GPU:0".to_string(),
            1 << 30,
        )];
        let one = merge(driver.clone(), tf.clone());
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].name, "NVIDIA H200");
        assert_eq!(one[0].memory_bytes, 1 << 30);
        let unpaired = merge(driver, Vec::new());
        assert_eq!(unpaired.len(), 1);
        assert!(unpaired[0].tf_device.is_empty());
        assert_eq!(merge(Vec::new(), tf).len(), 1);
    }
}
