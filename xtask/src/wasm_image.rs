//! `cargo xtask wasm-image`: the filter's `.wasm` as an OCI image that Istio's `WasmPlugin` and
//! Envoy Gateway's `EnvoyExtensionPolicy` pull, built without a container engine.
//!
//! The format is the "compat" variant of the Wasm image specification (solo-io/wasm
//! `spec-compat.md`), the one both fetchers read first (Istio `pkg/wasm/imagefetcher.go`, and
//! Envoy Gateway's copy of it): an OCI image manifest with exactly one layer of media type
//! `application/vnd.oci.image.layer.v1.tar+gzip`, a tar holding `plugin.wasm`. What
//! `FROM scratch` + `COPY plugin.wasm ./` makes with Docker, but reproducible: the same `.wasm`
//! gives the same bytes, hence the same digests, on any machine.
//!
//! - the tar: one entry, `plugin.wasm`, mode 0644, uid and gid 0, no user or group names, mtime
//!   `SOURCE_DATE_EPOCH` (0 when unset), ustar;
//! - gzip at level 9 with a zero mtime, no file name and the "unknown" OS byte (flate2's
//!   pure-Rust backend, pinned by Cargo.lock);
//! - JSON written by serde_json from fixed structures (keys in a fixed order);
//! - the platform `wasm`/`wasip1` (Go's names, which OCI uses); no creation time.
//!
//! Written as an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) and as a tar of
//! that layout (directories first, then files, in name order, same fixed metadata), which
//! `skopeo copy oci-archive:…`, `oras cp --from-oci-layout` or `crane push` send to a registry.
//! The layout's `index.json` points at the manifest itself (not at an image index): both
//! fetchers resolve an index by the host's platform (linux/amd64), which this image is not.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::tools::{build_wasm, step, target_dir};

/// The media types of the compat variant.
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The file name both fetchers look for in the layer.
const PLUGIN_FILE: &str = "plugin.wasm";

/// `cargo xtask wasm-image`: the image of `wasm` (default: the filter, built now) in `out`
/// (default `target/wasm-image`), and how to push it.
pub(crate) fn build(
    root: &Path,
    wasm: Option<PathBuf>,
    out: Option<&Path>,
    tag: &str,
) -> anyhow::Result<()> {
    let wasm = match wasm {
        Some(wasm) => wasm,
        None => step("build the filter (wasm32-wasip1)", || {
            build_wasm(root, "auth-filter")
        })?,
    };
    let out = out.map_or_else(|| target_dir(root).join("wasm-image"), Path::to_path_buf);
    let image = step("the OCI image (Wasm compat variant)", || {
        let bytes =
            std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
        std::fs::create_dir_all(&out)?;
        write(&bytes, &out, "auth-filter", tag, source_date_epoch()?)
    })?;
    print_push_commands(&image, tag);
    Ok(())
}

/// An image written by [`write`].
#[derive(Debug)]
pub(crate) struct WasmImage {
    /// `sha256:…` of the manifest: what a pinned reference (`…@sha256:…`) and Istio's
    /// `WasmPlugin.spec.sha256` name.
    pub(crate) manifest_digest: String,
    /// The OCI image layout directory.
    pub(crate) layout: PathBuf,
    /// The layout as one tar (`oci-archive:`).
    pub(crate) archive: PathBuf,
}

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org), else 0: the mtime inside the layer and the
/// archive.
pub(crate) fn source_date_epoch() -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH is not a number of seconds: {value:?}")),
        Err(_) => Ok(0),
    }
}

/// Writes the image of `wasm` into `out` (`<out>/<name>/` and `<out>/<name>.oci.tar`),
/// replacing what was there, tagged `tag` in the layout's index.
pub(crate) fn write(
    wasm: &[u8],
    out: &Path,
    name: &str,
    tag: &str,
    mtime: u64,
) -> anyhow::Result<WasmImage> {
    anyhow::ensure!(
        wasm.starts_with(b"\0asm"),
        "not a WebAssembly module (no \\0asm magic)"
    );
    let layer_tar = tar_of(&[(PLUGIN_FILE, wasm)], mtime)?;
    let layer = gzip(&layer_tar)?;
    let config = serde_json::to_vec(&json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer_tar)]},
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor(CONFIG_TYPE, &config),
        "layers": [descriptor(LAYER_TYPE, &layer)],
    }))?;
    let manifest_digest = sha256(&manifest);
    let mut manifest_descriptor = descriptor(MANIFEST_TYPE, &manifest);
    manifest_descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [manifest_descriptor],
    }))?;
    let oci_layout = serde_json::to_vec(&json!({"imageLayoutVersion": "1.0.0"}))?;

    // Every file of the layout, by its path inside it, in name order.
    let mut files: Vec<(String, &[u8])> = vec![
        ("index.json".into(), &index),
        ("oci-layout".into(), &oci_layout),
    ];
    for blob in [&config, &layer, &manifest] {
        let hex = sha256(blob).trim_start_matches("sha256:").to_owned();
        files.push((format!("blobs/sha256/{hex}"), blob));
    }
    files.sort();

    let layout = out.join(name);
    if layout.exists() {
        std::fs::remove_dir_all(&layout)
            .with_context(|| format!("cannot clear {}", layout.display()))?;
    }
    std::fs::create_dir_all(layout.join("blobs/sha256"))?;
    for (path, bytes) in &files {
        std::fs::write(layout.join(path), bytes)?;
    }
    let mut entries: Vec<(&str, &[u8])> = vec![("blobs/", &[]), ("blobs/sha256/", &[])];
    entries.extend(files.iter().map(|(path, bytes)| (path.as_str(), *bytes)));
    let archive = out.join(format!("{name}.oci.tar"));
    std::fs::write(&archive, tar_of(&entries, mtime)?)?;
    Ok(WasmImage {
        manifest_digest,
        layout,
        archive,
    })
}

/// `sha256:<hex>` of `bytes`.
fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(71);
    hex.push_str("sha256:");
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

/// A ustar archive of `entries` in the order given (a path ending in `/` is a directory), with
/// nothing of the machine in it: owner 0:0 without names, fixed modes, the given mtime.
fn tar_of(entries: &[(&str, &[u8])], mtime: u64) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in entries {
        let mut header = tar::Header::new_ustar();
        if path.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
        }
        header.set_path(path)?;
        header.set_size(bytes.len() as u64);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("")?;
        header.set_groupname("")?;
        header.set_mtime(mtime);
        header.set_cksum();
        builder.append(&header, *bytes)?;
    }
    Ok(builder.into_inner()?)
}

/// gzip with a fixed header: no name, mtime 0, OS "unknown" (255).
fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

/// Prints how to push the image just written.
pub(crate) fn print_push_commands(image: &WasmImage, tag: &str) {
    let archive = image.archive.display();
    let layout = image.layout.display();
    println!("    manifest digest: {}", image.manifest_digest);
    println!("    layout:  {layout}");
    println!("    archive: {archive}");
    println!("    push it with one of (REPO: e.g. registry.example.com/auth-service/auth-filter):");
    println!("      skopeo copy oci-archive:{archive}:{tag} docker://$REPO:{tag}");
    println!("      oras cp --from-oci-layout {layout}:{tag} $REPO:{tag}");
    println!("      crane push {layout} $REPO:{tag}");
    println!(
        "    and pin it: oci://$REPO@{} (Istio), $REPO@{} (Envoy Gateway)",
        image.manifest_digest, image.manifest_digest
    );
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    /// A small but valid module header and some bytes: the image does not look inside.
    const WASM: &[u8] = b"\0asm\x01\0\0\0\x00\x0bplugin-test";

    fn read_json(layout: &Path, digest: &str) -> (Vec<u8>, serde_json::Value) {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(sha256(&bytes), digest, "a blob is stored under its digest");
        let value = serde_json::from_slice(&bytes).unwrap();
        (bytes, value)
    }

    fn files_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(d) = pending.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    let bytes = std::fs::read(&path).unwrap();
                    out.push((path.strip_prefix(dir).unwrap().to_path_buf(), bytes));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn the_same_wasm_gives_the_same_bytes() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = write(WASM, a.path(), "auth-filter", "1.2.3", 0).unwrap();
        let second = write(WASM, b.path(), "auth-filter", "1.2.3", 0).unwrap();
        assert_eq!(first.manifest_digest, second.manifest_digest);
        assert_eq!(
            std::fs::read(&first.archive).unwrap(),
            std::fs::read(&second.archive).unwrap()
        );
        assert_eq!(files_of(&first.layout), files_of(&second.layout));
        // Rewriting in place gives the same again (nothing stale is left behind).
        let third = write(WASM, a.path(), "auth-filter", "1.2.3", 0).unwrap();
        assert_eq!(files_of(&third.layout), files_of(&second.layout));
        // Another module is another image.
        let other = write(b"\0asm\x01\0\0\0", b.path(), "auth-filter", "1.2.3", 0).unwrap();
        assert_ne!(other.manifest_digest, first.manifest_digest);
    }

    #[test]
    fn the_layout_is_a_compat_wasm_image_with_consistent_digests() {
        let dir = tempfile::tempdir().unwrap();
        let image = write(WASM, dir.path(), "auth-filter", "1.2.3", 1_700_000_000).unwrap();
        let layout = &image.layout;

        let oci_layout: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("oci-layout")).unwrap()).unwrap();
        assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");

        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let entry = &index["manifests"][0];
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
        assert_eq!(entry["mediaType"], MANIFEST_TYPE);
        assert_eq!(
            entry["annotations"]["org.opencontainers.image.ref.name"],
            "1.2.3"
        );
        assert_eq!(entry["digest"], image.manifest_digest.as_str());

        let (manifest_bytes, manifest) = read_json(layout, &image.manifest_digest);
        assert_eq!(entry["size"], manifest_bytes.len());
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], MANIFEST_TYPE);

        let config_ref = &manifest["config"];
        assert_eq!(config_ref["mediaType"], CONFIG_TYPE);
        let (config_bytes, config) = read_json(layout, config_ref["digest"].as_str().unwrap());
        assert_eq!(config_ref["size"], config_bytes.len());

        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "the compat variant has exactly one layer");
        assert_eq!(layers[0]["mediaType"], LAYER_TYPE);
        let digest = layers[0]["digest"].as_str().unwrap();
        let layer = std::fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.strip_prefix("sha256:").unwrap()),
        )
        .unwrap();
        assert_eq!(sha256(&layer), digest);
        assert_eq!(layers[0]["size"], layer.len());

        // The layer: gzip of a tar whose one entry is plugin.wasm, byte for byte the input; its
        // uncompressed digest is the config's diff_id.
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&layer[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&tar_bytes).as_str());
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["os"], "wasip1");
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut entries = archive.entries().unwrap();
        let mut plugin = entries.next().unwrap().unwrap();
        assert_eq!(plugin.path().unwrap().to_str(), Some(PLUGIN_FILE));
        assert_eq!(plugin.header().mtime().unwrap(), 1_700_000_000);
        assert_eq!(plugin.header().uid().unwrap(), 0);
        let mut content = Vec::new();
        plugin.read_to_end(&mut content).unwrap();
        assert_eq!(content, WASM);
        drop(plugin);
        assert!(entries.next().is_none(), "plugin.wasm alone");

        // The archive holds the layout's files, the same bytes.
        let archive_bytes = std::fs::read(&image.archive).unwrap();
        let mut archive = tar::Archive::new(&archive_bytes[..]);
        let mut from_archive = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.header().entry_type().is_dir() {
                continue;
            }
            let path = entry.path().unwrap().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            from_archive.push((path, bytes));
        }
        from_archive.sort();
        assert_eq!(from_archive, files_of(layout));
    }

    #[test]
    fn a_file_that_is_not_wasm_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write(b"ELF", dir.path(), "auth-filter", "x", 0).is_err());
    }
}
