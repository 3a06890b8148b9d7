//! Warmup, as TensorFlow Serving's `--enable_model_warmup` does it: the requests a model ships in
//! `assets.extra/tf_serving_warmup_requests` (a TFRecord file of `PredictionLog`s) are replayed on
//! a version before it serves, so its first client does not pay for TensorFlow's first runs.
//!
//! The file comes with the model, so it is hostile: it is opened as [`crate::model_files`] opens
//! such files; a record's declared length is bounded by
//! `--max_request_bytes` before anything is allocated, and checked by its CRC; at most
//! [`MAX_RECORDS`] records are read; and each request goes through the same checks as a client's.
//! The TFRecord framing is read by hand: it is four fields, and no crate here reads it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use tonic::Status;

use crate::proto::serving::{self as pb, prediction_log::LogType};
use crate::service::{check_tasks, Answering};
use crate::versions::Version;

/// Where a SavedModel keeps its warmup requests.
pub const WARMUP_FILE: &str = "assets.extra/tf_serving_warmup_requests";
/// TensorFlow Serving's bound on a warmup file (`WarmupConsts::kMaxNumRecords`).
pub const MAX_RECORDS: usize = 1000;

/// How a version is warmed up.
#[derive(Debug, Clone, Copy)]
pub struct Warmup {
    /// Each record is replayed this many times (`--num_request_iterations_for_warmup`).
    pub iterations: u32,
    pub answering: Answering,
}

#[derive(Debug, thiserror::Error)]
pub enum WarmupError {
    #[error("cannot open the warmup file {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} at offset {offset} of {}. Please verify your warmup data is in TFRecord format.", .path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("Failed to parse warmup record {record} from {}: {source}", .path.display())]
    Parse {
        path: PathBuf,
        record: usize,
        source: prost::DecodeError,
    },
    #[error("Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {}", .path.display())]
    TooMany { path: PathBuf },
    #[error("Unsupported log_type for warmup: {kind} (record {record} of {})", .path.display())]
    Unsupported {
        path: PathBuf,
        record: usize,
        kind: &'static str,
    },
    #[error("warmup request {record} of {} failed: {}", .path.display(), .status.message())]
    Failed {
        path: PathBuf,
        record: usize,
        status: Status,
    },
}

impl WarmupError {
    /// The gRPC code a version that failed to warm up shows in its status.
    pub fn code(&self) -> tonic::Code {
        match self {
            WarmupError::Open { .. } => tonic::Code::Unknown,
            WarmupError::Corrupt { .. } => tonic::Code::DataLoss,
            WarmupError::Unsupported { .. } => tonic::Code::Unimplemented,
            WarmupError::Failed { status, .. } => status.code(),
            _ => tonic::Code::InvalidArgument,
        }
    }
}

impl Warmup {
    /// Replays `dir`'s warmup requests on `version`; how many were run. A model without the
    /// file needs no warmup.
    pub async fn run(&self, version: &Arc<Version>, dir: &Path) -> Result<usize, WarmupError> {
        let path = dir.join(WARMUP_FILE);
        let file = match crate::model_files::open_beneath(dir, WARMUP_FILE) {
            Ok(Some(file)) => file,
            Ok(None) => return Ok(0),
            Err(source) => return Err(WarmupError::Open { path, source }),
        };
        let limit = self.answering.limits.max_request_bytes as u64;
        let mut reader = Records {
            file: std::io::BufReader::new(file),
            path: &path,
            offset: 0,
            limit,
        };
        let mut run = 0;
        let mut record = 0;
        while let Some(bytes) = reader.next()? {
            record += 1;
            if record > MAX_RECORDS {
                return Err(WarmupError::TooMany { path });
            }
            let log =
                pb::PredictionLog::decode(&bytes[..]).map_err(|source| WarmupError::Parse {
                    path: path.clone(),
                    record,
                    source,
                })?;
            let iterations = self.iterations.max(1);
            let mut log_type = log.log_type;
            for i in 1..=iterations {
                // The last replay takes the request itself; the ones before, a copy.
                let this = if i == iterations {
                    log_type.take()
                } else {
                    log_type.clone()
                };
                self.replay(version, this, &path, record).await?;
                run += 1;
            }
        }
        Ok(run)
    }

    async fn replay(
        &self,
        version: &Arc<Version>,
        log: Option<LogType>,
        path: &Path,
        record: usize,
    ) -> Result<(), WarmupError> {
        let unsupported = |kind| WarmupError::Unsupported {
            path: path.to_path_buf(),
            record,
            kind,
        };
        let answering = &self.answering;
        let result = match log {
            Some(LogType::PredictLog(log)) => answering
                .predict(version, log.request.unwrap_or_default(), None)
                .await
                .map(drop),
            Some(LogType::ClassifyLog(log)) => answering
                .classify(version, log.request.unwrap_or_default(), None)
                .await
                .map(drop),
            Some(LogType::RegressLog(log)) => answering
                .regress(version, log.request.unwrap_or_default(), None)
                .await
                .map(drop),
            Some(LogType::MultiInferenceLog(log)) => {
                let request = log.request.unwrap_or_default();
                match check_tasks(&request) {
                    Ok(_) => answering
                        .multi_inference(version, request, None)
                        .await
                        .map(drop),
                    Err(status) => Err(status),
                }
            }
            Some(LogType::SessionRunLog(_)) => return Err(unsupported("session_run_log")),
            Some(LogType::PredictStreamedLog(_)) => {
                return Err(unsupported("predict_streamed_log"))
            }
            None => return Err(unsupported("none")),
        };
        result.map_err(|status| WarmupError::Failed {
            path: path.to_path_buf(),
            record,
            status,
        })
    }
}

/// TFRecord's framing: a little-endian u64 length, the masked CRC-32C of those 8 bytes, the
/// data, and the data's masked CRC-32C.
struct Records<'a, R> {
    file: R,
    path: &'a Path,
    offset: u64,
    /// The longest record taken (`--max_request_bytes`).
    limit: u64,
}

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = CRC32C.checksum(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

impl<R: Read> Records<'_, R> {
    fn corrupt(&self, what: impl Into<String>) -> WarmupError {
        WarmupError::Corrupt {
            path: self.path.to_path_buf(),
            offset: self.offset,
            what: what.into(),
        }
    }

    /// Fills `buf`; `false` at a clean end of file before its first byte.
    fn read_exact_or_end(&mut self, buf: &mut [u8]) -> Result<bool, WarmupError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.file.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(self.corrupt("truncated record")),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.corrupt(format!("reading: {e}"))),
            }
        }
        Ok(true)
    }

    fn next(&mut self) -> Result<Option<Vec<u8>>, WarmupError> {
        let mut header = [0u8; 12];
        if !self.read_exact_or_end(&mut header)? {
            return Ok(None);
        }
        let (length, crc) = header.split_at(8);
        if masked_crc(length) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(self.corrupt("corrupted record (its length's checksum does not match)"));
        }
        let length = u64::from_le_bytes(length.try_into().expect("8 bytes"));
        if length > self.limit {
            return Err(self.corrupt(format!(
                "a record of {length} bytes, over the limit of {} per request (--max_request_bytes)",
                self.limit
            )));
        }
        let mut data = vec![0u8; length as usize + 4];
        if !self.read_exact_or_end(&mut data)? {
            return Err(self.corrupt("truncated record"));
        }
        let crc = data.split_off(length as usize);
        if masked_crc(&data) != u32::from_le_bytes(crc[..].try_into().expect("4 bytes")) {
            return Err(self.corrupt("corrupted record (its data's checksum does not match)"));
        }
        self.offset += 12 + length + 4;
        Ok(Some(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(data: &[u8]) -> Vec<u8> {
        let length = (data.len() as u64).to_le_bytes();
        let mut out = length.to_vec();
        out.extend(masked_crc(&length).to_le_bytes());
        out.extend(data);
        out.extend(masked_crc(data).to_le_bytes());
        out
    }

    fn read_all(bytes: &[u8], limit: u64) -> Result<Vec<Vec<u8>>, WarmupError> {
        let mut records = Records {
            file: bytes,
            path: Path::new("w"),
            offset: 0,
            limit,
        };
        let mut all = Vec::new();
        while let Some(r) = records.next()? {
            all.push(r);
        }
        Ok(all)
    }

    #[test]
    fn the_crc_is_tensorflows() {
        // TensorFlow's crc32c test vector: "123456789" is 0xe3069283.
        assert_eq!(CRC32C.checksum(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn records_are_read_and_checked() {
        let mut file = record(b"first");
        file.extend(record(b""));
        file.extend(record(b"third"));
        assert_eq!(
            read_all(&file, 100).unwrap(),
            vec![b"first".to_vec(), vec![], b"third".to_vec()]
        );
        let mut flipped = file.clone();
        flipped[13] ^= 1;
        let error = read_all(&flipped, 100).unwrap_err().to_string();
        assert!(error.contains("data's checksum"), "{error}");
        let error = read_all(&file[..file.len() - 2], 100)
            .unwrap_err()
            .to_string();
        assert!(error.contains("truncated record at offset"), "{error}");
    }

    #[test]
    fn a_huge_declared_length_is_refused_before_anything_is_allocated() {
        let length = (u64::MAX / 2).to_le_bytes();
        let mut file = length.to_vec();
        file.extend(masked_crc(&length).to_le_bytes());
        let error = read_all(&file, 1 << 20).unwrap_err().to_string();
        assert!(error.contains("over the limit"), "{error}");
    }
}
