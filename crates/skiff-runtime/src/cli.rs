//! `skiff images` subcommands (import, pull, ls, rm, build-serve) over the local image store.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::images::{ImageStore, ImageSummary};

/// `skiff images ...`
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ImagesCommand {
    /// Import a `docker save` or OCI image-layout archive (`-` reads standard input).
    Import { file: String },
    /// Pull an image from a registry (HTTPS; plain HTTP for loopback and `--insecure`).
    Pull {
        reference: String,
        /// Speak plain HTTP to this image's registry.
        #[arg(long)]
        insecure: bool,
        /// PEM file of CA certificates trusted besides the system roots.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Registry user name (the password comes from `SKIFF_REGISTRY_PASSWORD`).
        #[arg(long, requires = "password")]
        username: Option<String>,
        #[arg(
            long,
            env = "SKIFF_REGISTRY_PASSWORD",
            hide_env_values = true,
            hide = true
        )]
        password: Option<String>,
    },
    /// List images.
    Ls,
    /// Remove an image by reference or ID prefix, and the layers nothing else uses.
    Rm { reference: String },
    /// Build the `skiff serve` image (OCI layout) of this `skiff` binary and libonnxruntime.
    BuildServe {
        /// Image reference to tag it with.
        #[arg(long, default_value = "skiff-serve:latest")]
        tag: String,
        /// Archive to write (`-` is standard output).
        #[arg(short, long, default_value = "-", conflicts_with = "import")]
        output: String,
        /// Import the image into this node's store instead of writing an archive.
        #[arg(long)]
        import: bool,
        /// libonnxruntime to include; default `ORT_DYLIB_PATH`, else a `.venv`'s onnxruntime.
        #[arg(long)]
        onnxruntime: Option<PathBuf>,
    },
    /// Build an image of one host program and the shared libraries it loads (no Docker needed):
    /// `skiff images build-binary ./ml-api --tag ml-api:v1 --port 8080 --import`.
    BuildBinary {
        /// The program; it goes to /usr/bin/<name> and is the entrypoint.
        binary: PathBuf,
        #[arg(long)]
        tag: String,
        /// `KEY=value` in the image config (repeatable).
        #[arg(long = "env")]
        env: Vec<String>,
        /// Exposed TCP port (repeatable).
        #[arg(long = "port")]
        ports: Vec<u16>,
        /// Default arguments (the image's Cmd).
        #[arg(last = true)]
        args: Vec<String>,
        /// Archive to write (`-` is standard output).
        #[arg(short, long, default_value = "-", conflicts_with = "import")]
        output: String,
        /// Import the image into this node's store instead of writing an archive.
        #[arg(long)]
        import: bool,
    },
}

/// Runs an images subcommand against the store at `root`, printing to stdout.
pub fn run_images(root: &Path, cmd: ImagesCommand) -> anyhow::Result<()> {
    let store = ImageStore::open(root)?;
    let mut out = std::io::stdout().lock();
    match cmd {
        ImagesCommand::Import { file } => {
            let imported = if file == "-" {
                store.import(std::io::stdin().lock())?
            } else {
                let f = std::fs::File::open(&file)
                    .map_err(|e| anyhow::anyhow!("opening {file}: {e}"))?;
                store.import(std::io::BufReader::new(f))?
            };
            for image in imported {
                if image.references.is_empty() {
                    writeln!(out, "Loaded image ID: {}", image.image_id)?;
                }
                for r in image.references {
                    writeln!(out, "Loaded image: {r}")?;
                }
            }
        }
        ImagesCommand::Pull {
            reference,
            insecure,
            ca_file,
            username,
            password,
        } => {
            let parsed = crate::images::Reference::parse(&reference)?;
            let opts = crate::images::pull::PullOptions {
                credentials: username.map(|username| crate::images::pull::Credentials {
                    username,
                    password: password.unwrap_or_default(),
                }),
                insecure_registries: if insecure {
                    vec![parsed.domain.clone()]
                } else {
                    Vec::new()
                },
                ca_file,
                ..Default::default()
            };
            // The CLI runs outside any async runtime; a small one serves this pull.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let pulled = rt.block_on(crate::images::pull::pull(&store, &reference, &opts))?;
            writeln!(
                out,
                "Pulled {} ({}, {} blobs, {})",
                pulled.reference,
                pulled.manifest_digest,
                pulled.blobs_fetched,
                human_size(pulled.bytes_fetched)
            )?;
        }
        ImagesCommand::Ls => write!(out, "{}", format_table(&store.list()?))?,
        ImagesCommand::Rm { reference } => {
            for r in store.remove(&reference)? {
                writeln!(out, "Untagged: {r}")?;
            }
        }
        ImagesCommand::BuildServe {
            tag,
            output,
            import,
            onnxruntime,
        } => {
            let ort = onnxruntime
                .or_else(crate::binimage::find_onnxruntime)
                .ok_or_else(|| {
                    let places = crate::binimage::venv_search_starts()
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" and ");
                    anyhow::anyhow!(
                        "no libonnxruntime found: pass --onnxruntime PATH (the \
                         onnxruntime/capi/libonnxruntime.so.* of a Python package), set \
                         ORT_DYLIB_PATH, or run from where a .venv holds the onnxruntime package \
                         (searched for .venv in {places} and their parents)"
                    )
                })?;
            let exe = std::env::current_exe()?;
            let archive = crate::binimage::serve_image(&tag, &exe, &ort)
                .map_err(|e| anyhow::anyhow!("building {tag}: {e}"))?;
            emit(&store, &mut out, &tag, archive, &output, import)?;
        }
        ImagesCommand::BuildBinary {
            binary,
            tag,
            env,
            ports,
            args,
            output,
            import,
        } => {
            if let Some(bad) = env.iter().find(|e| !e.contains('=')) {
                anyhow::bail!("--env {bad:?}: expected KEY=value");
            }
            let name = binary
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| anyhow::anyhow!("{} names no file", binary.display()))?;
            let mut env = env;
            if !env.iter().any(|e| e.starts_with("PATH=")) {
                env.push(format!("PATH={}", crate::process::DEFAULT_PATH));
            }
            let config = crate::binimage::ImageConfig {
                entrypoint: vec![format!("/usr/bin/{name}")],
                cmd: args,
                env,
                exposed_ports: ports.iter().map(|p| format!("{p}/tcp")).collect(),
                working_dir: Some("/".into()),
            };
            let archive = crate::binimage::image_from_binary(&tag, &binary, &[], config)
                .map_err(|e| anyhow::anyhow!("building {tag}: {e}"))?;
            emit(&store, &mut out, &tag, archive, &output, import)?;
        }
    }
    Ok(())
}

/// Imports a built image archive, or writes it to `output` (`-` = standard output).
fn emit(
    store: &ImageStore,
    out: &mut std::io::StdoutLock<'_>,
    tag: &str,
    archive: Vec<u8>,
    output: &str,
    import: bool,
) -> anyhow::Result<()> {
    if import {
        for image in store.import(archive.as_slice())? {
            for r in image.references {
                writeln!(out, "Loaded image: {r}")?;
            }
        }
    } else if output == "-" {
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            anyhow::bail!("refusing to write an image archive to a terminal: use -o FILE");
        }
        out.write_all(&archive)?;
    } else {
        std::fs::write(output, &archive).map_err(|e| anyhow::anyhow!("writing {output}: {e}"))?;
        eprintln!(
            "Wrote {tag} to {output} ({})",
            human_size(archive.len() as u64)
        );
    }
    Ok(())
}

/// The `images ls` table, columns like crictl's.
pub fn format_table(images: &[ImageSummary]) -> String {
    let rows: Vec<[String; 4]> = images
        .iter()
        .map(|i| {
            [
                i.repository.clone(),
                i.tag.clone().unwrap_or_else(|| "<none>".into()),
                short_id(&i.image_id),
                human_size(i.size),
            ]
        })
        .collect();
    let header = ["REPOSITORY", "TAG", "IMAGE ID", "SIZE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut s = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:w0$}   {:w1$}   {:w2$}   {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

fn short_id(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// Sizes as `docker images` prints them (decimal units).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + UNITS[unit]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_table() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1_982_256), "1.982MB");
        assert_eq!(human_size(2_000_000), "2MB");
        let table = format_table(&[ImageSummary {
            reference: "docker.io/library/ml-api:v1".into(),
            repository: "docker.io/library/ml-api".into(),
            tag: Some("v1".into()),
            manifest_digest: "sha256:aa".into(),
            image_id: format!("sha256:{}", "b".repeat(64)),
            size: 1_500,
            created: None,
        }]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("REPOSITORY"));
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["docker.io/library/ml-api", "v1", "bbbbbbbbbbbb", "1.5kB"]
        );
    }
}
