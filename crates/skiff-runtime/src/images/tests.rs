//! Image store tests: both archive formats, digest checks, GC, whiteouts, hostile layers.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rand::{Rng, SeedableRng};

use super::*;
use crate::testimages::{Layer, TestImage, tar_of};

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(dir.path().join("images")).expect("open");
    (dir, store)
}

fn busybox(reference: &str) -> TestImage {
    TestImage::busybox(reference)
        .expect("busybox-static must be installed (scripts/setup.sh)")
        .env("MODEL=resnet")
        .working_dir("/tmp")
        .expose("8080/tcp")
}

fn blob_count(store: &ImageStore) -> usize {
    std::fs::read_dir(store.root().join("blobs/sha256"))
        .expect("blobs")
        .count()
}

fn check_busybox_image(store: &ImageStore, reference: &str) {
    let image = store.resolve(reference).expect("resolve");
    let cfg = image.config.config().as_ref().expect("config");
    assert_eq!(cfg.cmd().as_deref(), Some(&["/bin/sh".to_string()][..]));
    assert!(
        cfg.env()
            .as_ref()
            .expect("env")
            .contains(&"MODEL=resnet".to_string())
    );
    assert_eq!(cfg.working_dir().as_deref(), Some("/tmp"));
    assert_eq!(
        cfg.exposed_ports().as_deref(),
        Some(&["8080/tcp".to_string()][..])
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let rootfs = dir.path().join("rootfs");
    store.unpack(reference, &rootfs).expect("unpack");
    let host = std::fs::read("/bin/busybox").expect("host busybox");
    assert_eq!(
        std::fs::read(rootfs.join("bin/busybox")).expect("busybox"),
        host
    );
    let mode = std::fs::metadata(rootfs.join("bin/busybox"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "busybox lost its exec bits");
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/sh")).expect("sh"),
        Path::new("busybox")
    );
    let tmp_mode = std::fs::metadata(rootfs.join("tmp"))
        .expect("tmp")
        .permissions()
        .mode();
    assert_eq!(tmp_mode & 0o7777, 0o1777);
}

#[test]
fn imports_docker_save_archive() {
    let (_d, store) = store();
    let archive = busybox("ml-api:v1").docker_archive().expect("archive");
    let imported = store.import(archive.as_slice()).expect("import");
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].references, ["docker.io/library/ml-api:v1"]);
    let list = store.list().expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].repository, "docker.io/library/ml-api");
    assert_eq!(list[0].tag.as_deref(), Some("v1"));
    assert_eq!(list[0].image_id, imported[0].image_id);
    assert_eq!(list[0].created.as_deref(), Some("2026-01-02T03:04:05Z"));
    assert!(list[0].size > 1_000_000);
    check_busybox_image(&store, "ml-api:v1");
    check_busybox_image(&store, "docker.io/library/ml-api:v1");
    check_busybox_image(&store, &imported[0].image_id[7..19]);
    assert!(matches!(
        store.resolve("ml-api"),
        Err(ImageError::NotFound(_))
    ));
}

#[test]
fn imports_oci_layout_archive_with_gzip_layers() {
    let (_d, store) = store();
    let mut image = busybox("registry.local:5000/team/ml-api");
    image.layers[0].gzip = true;
    let image = image.layer(Layer::new().file("etc/motd", "hi\n", 0o644).gzip());
    let imported = store
        .import(image.oci_archive().expect("archive").as_slice())
        .expect("import");
    assert_eq!(
        imported[0].references,
        ["registry.local:5000/team/ml-api:latest"]
    );
    check_busybox_image(&store, "registry.local:5000/team/ml-api");
    let image = store
        .resolve("registry.local:5000/team/ml-api:latest")
        .expect("resolve");
    assert_eq!(image.manifest.layers().len(), 2);
    assert_eq!(
        image.manifest.layers()[0].media_type(),
        &MediaType::ImageLayerGzip
    );
}

#[test]
fn imports_docker_25_oci_archive_naming() {
    // Docker 25+ `docker save` writes an OCI layout whose ref.name is only the tag.
    let (_d, store) = store();
    let mut files = busybox("x:y").oci_archive_files().expect("files");
    let index = files
        .iter_mut()
        .find(|(p, _)| p == "index.json")
        .expect("index");
    let text = String::from_utf8(index.1.clone()).expect("utf8").replace(
        r#""org.opencontainers.image.ref.name":"docker.io/library/x:y""#,
        r#""org.opencontainers.image.ref.name":"v2","io.containerd.image.name":"docker.io/library/ml-api:v2""#,
    );
    let text = text.replace(
        r#""org.opencontainers.image.ref.name":"x:y""#,
        r#""org.opencontainers.image.ref.name":"v2","io.containerd.image.name":"docker.io/library/ml-api:v2""#,
    );
    assert!(text.contains("containerd"), "{text}");
    index.1 = text.into_bytes();
    store
        .import(tar_of(&files).expect("tar").as_slice())
        .expect("import");
    store
        .resolve("ml-api:v2")
        .expect("named by the containerd annotation");
}

#[test]
fn digest_mismatch_is_rejected() {
    let (_d, store) = store();
    let image = busybox("ml-api:v1").layer(Layer::new().file("a", "original", 0o644));
    // docker save: a tampered layer no longer matches the config's diff_ids.
    let mut files = image.docker_archive_files().expect("files");
    let layer = files
        .iter_mut()
        .rev()
        .find(|(p, _)| p.ends_with("layer.tar"))
        .expect("layer");
    let pos = layer
        .1
        .windows(8)
        .position(|w| w == b"original")
        .expect("content");
    layer.1[pos] = b'O';
    let err = store
        .import(tar_of(&files).expect("tar").as_slice())
        .expect_err("tampered");
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    // docker save: a config not matching its file name.
    let mut files = image.docker_archive_files().expect("files");
    let config = files
        .iter_mut()
        .find(|(p, _)| p.ends_with(".json") && p != "manifest.json");
    let config = config.expect("config");
    config.1.extend_from_slice(b" ");
    let err = store
        .import(tar_of(&files).expect("tar").as_slice())
        .expect_err("tampered");
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    // OCI: a blob whose content does not hash to its name.
    let mut files = image.oci_archive_files().expect("files");
    let blob = files
        .iter_mut()
        .find(|(p, _)| p.starts_with("blobs/"))
        .expect("blob");
    blob.1.push(0);
    let err = store
        .import(tar_of(&files).expect("tar").as_slice())
        .expect_err("tampered");
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(store.list().expect("list").is_empty());
    // Nothing staged is left behind.
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp"))
            .expect("tmp")
            .count(),
        0
    );
}

#[test]
fn reimport_is_idempotent() {
    let (_d, store) = store();
    let archive = busybox("ml-api:v1").docker_archive().expect("archive");
    let first = store.import(archive.as_slice()).expect("import");
    let blobs = blob_count(&store);
    let index = std::fs::read(store.root().join("index.json")).expect("index");
    let second = store.import(archive.as_slice()).expect("re-import");
    assert_eq!(first, second);
    assert_eq!(blob_count(&store), blobs);
    assert_eq!(
        std::fs::read(store.root().join("index.json")).expect("index"),
        index
    );
    assert_eq!(store.list().expect("list").len(), 1);
}

#[test]
fn retag_moves_reference_and_rm_collects_garbage() {
    let (_d, store) = store();
    let v1 = busybox("ml-api:v1").layer(Layer::new().file("model", "v1", 0o644));
    let v2 = busybox("ml-api:v2").layer(Layer::new().file("model", "v2", 0o644));
    store
        .import(v1.docker_archive().expect("v1").as_slice())
        .expect("v1");
    let base_only = blob_count(&store);
    store
        .import(v2.oci_archive().expect("v2").as_slice())
        .expect("v2");
    assert_eq!(store.list().expect("list").len(), 2);
    assert!(blob_count(&store) > base_only);
    let removed = store.remove("ml-api:v2").expect("rm");
    assert_eq!(removed, ["docker.io/library/ml-api:v2"]);
    // v2's unique blobs are gone, v1 (sharing the busybox layer) still unpacks.
    assert_eq!(blob_count(&store), base_only);
    check_busybox_image(&store, "ml-api:v1");
    assert!(matches!(
        store.resolve("ml-api:v2"),
        Err(ImageError::NotFound(_))
    ));
    assert!(matches!(
        store.remove("ml-api:v2"),
        Err(ImageError::NotFound(_))
    ));
    let id = store
        .resolve("ml-api:v1")
        .expect("v1")
        .manifest
        .config()
        .digest()
        .to_string();
    store.remove(&id).expect("rm by id");
    assert_eq!(blob_count(&store), 0);
}

#[test]
fn unpack_honours_whiteouts_links_and_modes() {
    let base = Layer::new()
        .dir("a", 0o755)
        .file("a/x", "x", 0o644)
        .file("a/y", "y", 0o750)
        .dir("b", 0o755)
        .file("b/old", "old", 0o644)
        .file("c", "c", 0o644)
        .hardlink("a/y-link", "a/y")
        .symlink("lnk", "a/y");
    let top = Layer::new()
        .whiteout("a/x")
        .dir("b", 0o755)
        .opaque("b")
        .file("b/new", "new", 0o644)
        .whiteout("c")
        .file("lnk", "now a file", 0o600);
    let (_d, store) = store();
    let image = TestImage::new("layers:1").layer(base).layer(top.gzip());
    store
        .import(image.oci_archive().expect("oci").as_slice())
        .expect("import");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    store.unpack("layers:1", root).expect("unpack");
    let names = |p: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root.join(p))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("."), ["a", "b", "lnk"]);
    assert_eq!(names("a"), ["y", "y-link"]);
    assert_eq!(names("b"), ["new"]);
    let y = std::fs::metadata(root.join("a/y")).expect("y");
    assert_eq!(y.permissions().mode() & 0o777, 0o750);
    assert_eq!(
        std::fs::metadata(root.join("a/y-link"))
            .expect("link")
            .ino(),
        y.ino()
    );
    // The file replaced the symlink instead of writing through it.
    assert_eq!(std::fs::read(root.join("a/y")).expect("y"), b"y");
    assert_eq!(std::fs::read(root.join("lnk")).expect("lnk"), b"now a file");
}

fn apply(layer: Layer, root: &Path) -> Result<(), ImageError> {
    apply_layer(layer.to_tar().expect("tar").as_slice(), root)
}

#[test]
fn hostile_layers_never_write_outside_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("rootfs");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::write(outside.join("victim"), "safe").expect("victim");
    let out = outside.display().to_string();
    let mode_before = std::fs::metadata(&outside)
        .expect("outside")
        .permissions()
        .mode();

    for (name, layer) in [
        ("dotdot", Layer::new().file("../outside/pwned", "x", 0o644)),
        (
            "dotdot-deep",
            Layer::new().file("a/../../outside/pwned", "x", 0o644),
        ),
        (
            "hardlink-out",
            Layer::new().hardlink("h", "../outside/victim"),
        ),
        (
            "whiteout-out",
            Layer::new().file("../outside/.wh.victim", "", 0o644),
        ),
    ] {
        let err = apply(layer, &root).expect_err(name);
        assert!(
            matches!(err, ImageError::UnsafePath { .. }),
            "{name}: {err}"
        );
    }
    // Symlinks are resolved as if the rootfs were `/`: writes through them stay inside.
    let depth = "../".repeat(20);
    let layer = Layer::new()
        .symlink("rel", &format!("{depth}{}", out.trim_start_matches('/')))
        .file("rel/pwned-rel", "x", 0o644)
        .symlink("abs", &out)
        .file("abs/pwned-abs", "x", 0o644)
        .symlink("victim-link", &format!("{out}/victim"))
        .file("victim-link", "overwritten?", 0o644)
        .symlink("dirlink", &out)
        .dir("dirlink", 0o700)
        .symlink("loop", "loop")
        .whiteout("abs/victim");
    apply(layer, &root).expect("symlink tricks are contained");
    let mut leaked: Vec<_> = std::fs::read_dir(&outside)
        .expect("outside")
        .map(|e| e.expect("entry").file_name())
        .collect();
    leaked.sort();
    assert_eq!(leaked, ["victim"]);
    assert_eq!(
        std::fs::read(outside.join("victim")).expect("victim"),
        b"safe"
    );
    let outside_mode = std::fs::metadata(&outside)
        .expect("outside")
        .permissions()
        .mode();
    assert_eq!(outside_mode, mode_before, "chmod went through a symlink");
    let inside = root.join(out.trim_start_matches('/'));
    assert!(inside.join("pwned-rel").is_file());
    assert!(inside.join("pwned-abs").is_file());
    assert_eq!(
        std::fs::read(root.join("victim-link")).expect("file"),
        b"overwritten?"
    );
    // A symlink loop used as a directory is an error, not a hang.
    let err = apply(Layer::new().file("loop/x", "x", 0o644), &root).expect_err("loop");
    assert!(matches!(err, ImageError::UnsafePath { .. }), "{err}");
}

#[test]
fn random_and_truncated_archives_never_panic() {
    let (_d, store) = store();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for len in [0usize, 1, 100, 511, 512, 1024, 5000] {
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        assert!(store.import(bytes.as_slice()).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = apply_layer(bytes.as_slice(), dir.path());
    }
    let image = TestImage::new("small:1")
        .layer(
            Layer::new()
                .file("f", vec![7u8; 3000], 0o644)
                .symlink("l", "f"),
        )
        .layer(Layer::new().whiteout("f").gzip());
    for archive in [
        image.docker_archive().expect("d"),
        image.oci_archive().expect("o"),
    ] {
        for cut in (0..archive.len()).step_by(97) {
            let _ = store.import(&archive[..cut]);
        }
        for _ in 0..200 {
            let mut bad = archive.clone();
            let i = rng.random_range(0..bad.len());
            bad[i] ^= 1 << rng.random_range(0..8);
            if store.import(bad.as_slice()).is_ok() {
                let list = store.list().expect("a successful import lists");
                for image in list {
                    let dir = tempfile::tempdir().expect("tempdir");
                    store
                        .unpack(&image.reference, dir.path())
                        .expect("verified image unpacks");
                }
            }
        }
    }
    let layer = Layer::new()
        .file("a/b", vec![1u8; 2000], 0o644)
        .to_tar()
        .expect("tar");
    for cut in (0..layer.len()).step_by(61) {
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = apply_layer(&layer[..cut], dir.path());
    }
}

#[test]
fn cli_imports_lists_and_removes() {
    use crate::cli::{ImagesCommand, run_images};
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("img.tar");
    busybox("ml-api:v1")
        .write_docker_archive(std::fs::File::create(&archive).expect("create"))
        .expect("write");
    let root = dir.path().join("images");
    let file = archive.display().to_string();
    run_images(&root, ImagesCommand::Import { file }).expect("import");
    run_images(&root, ImagesCommand::Ls).expect("ls");
    assert_eq!(
        ImageStore::open(&root)
            .expect("open")
            .list()
            .expect("list")
            .len(),
        1
    );
    run_images(
        &root,
        ImagesCommand::Rm {
            reference: "ml-api:v1".into(),
        },
    )
    .expect("rm");
    assert!(
        ImageStore::open(&root)
            .expect("open")
            .list()
            .expect("list")
            .is_empty()
    );
    let missing = ImagesCommand::Import {
        file: dir.path().join("nope").display().to_string(),
    };
    assert!(run_images(&root, missing).is_err());
}

#[test]
fn unnamed_images_are_kept_until_named_or_removed() {
    let (_d, store) = store();
    let image = TestImage::new("app:1").layer(Layer::new().file("f", "f", 0o644));
    let mut files = image.docker_archive_files().expect("files");
    let manifest = files
        .iter_mut()
        .find(|(p, _)| p == "manifest.json")
        .expect("manifest");
    manifest.1 = String::from_utf8(manifest.1.clone())
        .expect("utf8")
        .replace(r#"["app:1"]"#, "[]")
        .into_bytes();
    let imported = store
        .import(tar_of(&files).expect("tar").as_slice())
        .expect("import");
    assert!(imported[0].references.is_empty());
    assert_eq!(store.gc().expect("gc"), 0);
    let list = store.list().expect("list");
    assert_eq!((list.len(), list[0].repository.as_str()), (1, "<none>"));
    store
        .unpack(&list[0].reference, tempfile::tempdir().expect("tmp").path())
        .expect("unpack");
    // Importing it with a name replaces the unnamed entry.
    store
        .import(image.docker_archive().expect("named").as_slice())
        .expect("import");
    let list = store.list().expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].reference, "docker.io/library/app:1");
}

#[test]
fn multi_platform_oci_index_picks_this_machine() {
    let (_d, store) = store();
    let image = TestImage::new("multi:1").layer(Layer::new().file("f", "f", 0o644));
    let mut files = image.oci_archive_files().expect("files");
    let pos = files
        .iter()
        .position(|(p, _)| p == "index.json")
        .expect("index");
    let top: serde_json::Value = serde_json::from_slice(&files[pos].1).expect("json");
    let mut real = top["manifests"][0].clone();
    real.as_object_mut().expect("object").remove("annotations");
    real["platform"] =
        serde_json::json!({"os": "linux", "architecture": crate::testimages::host_arch()});
    let other = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", "0".repeat(64)),
        "size": 10,
        "platform": {"os": "linux", "architecture": "s390x"},
    });
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [other, real],
    }))
    .expect("nested");
    let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&nested));
    files[pos].1 = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": nested.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi:1"},
        }],
    }))
    .expect("top");
    files.push((format!("blobs/sha256/{hex}"), nested));
    store
        .import(tar_of(&files).expect("tar").as_slice())
        .expect("import");
    let resolved = store.resolve("multi:1").expect("resolve");
    assert_eq!(
        resolved.manifest_digest,
        top["manifests"][0]["digest"].as_str().expect("digest")
    );
}

#[test]
fn docker_save_symlinked_duplicate_layers_resolve() {
    // Older `docker save` stores a repeated layer once and symlinks the other copy to it.
    let (_d, store) = store();
    let layer = Layer::new().file("same", "same", 0o644);
    let image = TestImage::new("dup:1").layer(layer.clone()).layer(layer);
    let files = image.docker_archive_files().expect("files");
    let layers: Vec<&String> = files
        .iter()
        .map(|(p, _)| p)
        .filter(|p| p.ends_with("layer.tar"))
        .collect();
    let (first, second) = (layers[0].clone(), layers[1].clone());
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        if *path == second {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, path, format!("../{first}"))
                .expect("link");
        } else {
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data.as_slice()).expect("file");
        }
    }
    let archive = b.into_inner().expect("tar");
    store.import(archive.as_slice()).expect("import");
    let resolved = store.resolve("dup:1").expect("resolve");
    assert_eq!(resolved.manifest.layers().len(), 2);
    // A link pointing outside the archive is just a missing file.
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        if *path == second {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, path, "../../../etc/passwd")
                .expect("link");
        } else {
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data.as_slice()).expect("file");
        }
    }
    let err = store
        .import(b.into_inner().expect("tar").as_slice())
        .expect_err("escaping link");
    assert!(matches!(err, ImageError::InvalidArchive(_)), "{err}");
}
