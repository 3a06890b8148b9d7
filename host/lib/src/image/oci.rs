//! The closure as an OCI image archive, byte for byte reproducible.
//!
//! One uncompressed layer: sorted entries, mtime 0, owner 0:0, fixed modes; a config with a fixed
//! `created`. The same inputs give the same layer, config and manifest digests on any machine. The
//! archive carries both an OCI `index.json` and Docker's `manifest.json`, so `docker load` takes it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::str::FromStr;

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, Digest, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use super::ImageError;
use crate::closure::Closure;

/// The user everything in the image runs as.
pub const NOBODY: &str = "65534:65534";
pub use tfsandbox_jailer::plan::{GROUP, PASSWD};
/// RFC 3339 for the epoch: images carry no build time.
const CREATED: &str = "1970-01-01T00:00:00Z";

/// What a build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// `sha256:...` of the manifest: the image's digest.
    pub manifest_digest: String,
    /// `sha256:...` of the config: the engine's image id.
    pub config_digest: String,
    pub layer_digest: String,
    pub layer_size: u64,
    /// The bytes written to the archive.
    pub archive_size: u64,
}

/// A file or folder of the layer.
enum Item<'a> {
    Dir { mode: u32 },
    File { source: Source<'a>, mode: u32 },
}

enum Source<'a> {
    Host(&'a std::path::Path),
    Text(&'static str),
}

/// Every path of the layer, sorted, folders before what they hold.
fn layer_items(closure: &Closure) -> BTreeMap<String, Item<'_>> {
    let mut items = BTreeMap::new();
    let add_parents = |items: &mut BTreeMap<String, Item>, path: &str| {
        let mut parent = std::path::Path::new(path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            items
                .entry(dir.to_string_lossy().into_owned())
                .or_insert(Item::Dir { mode: 0o755 });
            parent = dir.parent();
        }
    };
    for entry in &closure.entries {
        let path = entry.image_path.trim_start_matches('/').to_string();
        add_parents(&mut items, &path);
        items.insert(
            path,
            Item::File {
                source: Source::Host(&entry.host_path),
                mode: 0o755,
            },
        );
    }
    for (path, text) in [("etc/passwd", PASSWD), ("etc/group", GROUP)] {
        add_parents(&mut items, path);
        items.insert(
            path.into(),
            Item::File {
                source: Source::Text(text),
                mode: 0o644,
            },
        );
    }
    // Mount points: /tmp for a tmpfs, /models for the model folders.
    items.insert("tmp".into(), Item::Dir { mode: 0o1777 });
    items.insert("models".into(), Item::Dir { mode: 0o755 });
    // CUDA: the empty folder the NVIDIA container toolkit mounts the driver's libraries into
    // (the loader is told it after the closure's own folder).
    if closure.variant == crate::closure::Variant::Cuda {
        let dir = crate::closure::DRIVER_LIBRARY_DIR.trim_start_matches('/');
        add_parents(&mut items, dir);
        items.insert(dir.into(), Item::Dir { mode: 0o755 });
    }
    items
}

/// Writes the layer tar; `progress` is told of every file byte read.
fn write_layer(
    closure: &Closure,
    out: impl Write,
    progress: &dyn Fn(u64),
) -> Result<(), ImageError> {
    let mut tar = tar::Builder::new(out);
    for (path, item) in layer_items(closure) {
        let mut header = Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match item {
            Item::Dir { mode } => {
                header.set_entry_type(EntryType::Directory);
                header.set_mode(mode);
                header.set_size(0);
                tar.append_data(&mut header, format!("{path}/"), io::empty())?;
            }
            Item::File { source, mode } => {
                header.set_entry_type(EntryType::Regular);
                header.set_mode(mode);
                match source {
                    Source::Host(host) => {
                        let file = File::open(host)
                            .map_err(|e| ImageError::Io(format!("{}: {e}", host.display())))?;
                        header.set_size(file.metadata()?.len());
                        tar.append_data(
                            &mut header,
                            &path,
                            Progress {
                                inner: file,
                                progress,
                            },
                        )?;
                    }
                    Source::Text(text) => {
                        header.set_size(text.len() as u64);
                        tar.append_data(&mut header, &path, text.as_bytes())?;
                    }
                }
            }
        }
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// Writes the image archive for `closure`, named `reference` (e.g. `tfsandbox-worker:abc`).
///
/// The layer is generated twice: once to learn its digest and size (which the archive names
/// before its bytes), once into the archive. That reads the closure twice but stores nothing.
pub fn write_archive(
    closure: &Closure,
    reference: &str,
    out: impl Write,
    progress: &dyn Fn(u64),
) -> Result<BuiltImage, ImageError> {
    let mut layer_hash = HashingWriter::new(io::sink());
    write_layer(closure, &mut layer_hash, &|_| {})?;
    let (layer_digest, layer_size) = layer_hash.finish();

    let architecture = match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        other => return Err(ImageError::Architecture(other)),
    };
    let config = ImageConfigurationBuilder::default()
        .created(CREATED)
        .architecture(architecture)
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .user(NOBODY)
                .entrypoint(closure.image_entrypoint())
                .working_dir("/tmp")
                .build()?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![layer_digest.clone()])
                .build()?,
        )
        .build()?;
    let config_json = config.to_string()?.into_bytes();
    let config_digest = sha256_digest(&config_json);

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_json.len() as u64,
            parse_digest(&config_digest)?,
        ))
        .layers(vec![Descriptor::new(
            MediaType::ImageLayer,
            layer_size,
            parse_digest(&layer_digest)?,
        )])
        .build()?;
    let manifest_json = manifest.to_string()?.into_bytes();
    let manifest_digest = sha256_digest(&manifest_json);

    let mut manifest_descriptor = Descriptor::new(
        MediaType::ImageManifest,
        manifest_json.len() as u64,
        parse_digest(&manifest_digest)?,
    );
    // One annotation only: a map of several would serialize in no fixed order.
    manifest_descriptor.set_annotations(Some(
        [(
            "io.containerd.image.name".to_string(),
            reference.to_string(),
        )]
        .into(),
    ));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_descriptor])
        .build()?;
    let blob = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    let docker_manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": blob(&config_digest),
        "RepoTags": [reference],
        "Layers": [blob(&layer_digest)],
    }]))?;

    let mut archive = tar::Builder::new(CountingWriter {
        inner: out,
        count: 0,
    });
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    small.insert(blob(&config_digest), config_json);
    small.insert(blob(&manifest_digest), manifest_json);
    small.insert("index.json".into(), index.to_string()?.into_bytes());
    small.insert("manifest.json".into(), docker_manifest);
    small.insert(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );

    for dir in ["blobs", "blobs/sha256"] {
        let mut header = fixed_header(EntryType::Directory, 0o755, 0);
        archive.append_data(&mut header, format!("{dir}/"), io::empty())?;
    }
    // Everything in name order; the layer's name sorts among the other blobs.
    let layer_name = blob(&layer_digest);
    let mut layer_written = false;
    for (name, bytes) in &small {
        if !layer_written && layer_name < *name {
            append_layer(&mut archive, &layer_name, layer_size, closure, progress)?;
            layer_written = true;
        }
        let mut header = fixed_header(EntryType::Regular, 0o644, bytes.len() as u64);
        archive.append_data(&mut header, name, bytes.as_slice())?;
    }
    if !layer_written {
        append_layer(&mut archive, &layer_name, layer_size, closure, progress)?;
    }
    let mut counted = archive.into_inner()?;
    counted.flush()?;
    Ok(BuiltImage {
        manifest_digest,
        config_digest,
        layer_digest,
        layer_size,
        archive_size: counted.count,
    })
}

/// The layer as one archive entry, generated straight into the archive.
fn append_layer<W: Write>(
    archive: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    closure: &Closure,
    progress: &dyn Fn(u64),
) -> Result<(), ImageError> {
    let mut header = fixed_header(EntryType::Regular, 0o644, size);
    header.set_path(name)?;
    header.set_cksum();
    let out = archive.get_mut();
    out.write_all(header.as_bytes())?;
    let mut counted = CountingWriter {
        inner: &mut *out,
        count: 0,
    };
    write_layer(closure, &mut counted, progress)?;
    if counted.count != size {
        return Err(ImageError::Io(format!(
            "the layer changed while it was written ({size} then {} bytes)",
            counted.count
        )));
    }
    // Entries are padded to 512-byte blocks.
    let padding = (512 - size % 512) % 512;
    out.write_all(&vec![0u8; padding as usize])?;
    Ok(())
}

fn fixed_header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn parse_digest(digest: &str) -> Result<Digest, ImageError> {
    Digest::from_str(digest).map_err(|e| ImageError::Io(format!("digest {digest}: {e}")))
}

/// Hashes and counts what passes through.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// `sha256:...` and the byte count.
    pub fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Progress<'a, R> {
    inner: R,
    progress: &'a dyn Fn(u64),
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

/// The paths of the layer, in order, as `image_path` strings: the closure plus the fixed files.
pub fn layer_listing(closure: &Closure) -> Vec<String> {
    layer_items(closure)
        .into_iter()
        .map(|(path, item)| match item {
            Item::Dir { .. } => format!("/{path}/"),
            Item::File { .. } => format!("/{path}"),
        })
        .collect()
}
