//! Debian kernels for the VM tier: downloaded with apt-get from Debian's archive through a
//! private apt configuration under target/vm (the host's apt state is never touched, nothing
//! is installed), unpacked with dpkg-deb, and cached between runs.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

pub struct KernelSpec {
    pub name: &'static str,
    sources: &'static str,
    /// Package names look like `{prefix}<number>{suffix}`.
    prefix: &'static str,
    suffix: &'static str,
}

const BOOKWORM: &str = "deb http://deb.debian.org/debian bookworm main\n\
                        deb http://deb.debian.org/debian-security bookworm-security main\n";
const BULLSEYE: &str = "deb http://deb.debian.org/debian bullseye main\n\
                        deb http://deb.debian.org/debian-security bullseye-security main\n";

pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        name: "debian-5.10",
        sources: BULLSEYE,
        prefix: "linux-image-5.10.0-",
        suffix: "-cloud-amd64",
    },
    KernelSpec {
        name: "debian-6.1",
        sources: BOOKWORM,
        prefix: "linux-image-6.1.0-",
        suffix: "-cloud-amd64",
    },
    KernelSpec {
        name: "debian-6.12",
        sources: BOOKWORM,
        prefix: "linux-image-6.12.",
        suffix: "+deb12-cloud-amd64",
    },
];

pub fn spec(name: &str) -> anyhow::Result<&'static KernelSpec> {
    KERNELS.iter().find(|k| k.name == name).with_context(|| {
        let names: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
        format!("unknown kernel {name:?}; one of {names:?} or all")
    })
}

pub struct Kernel {
    /// The unpacked package; cached segments for this kernel live here too.
    pub dir: PathBuf,
    pub vmlinuz: PathBuf,
    /// lib/modules/<release> of the unpacked package.
    pub modules: PathBuf,
}

/// A private apt: its own sources, lists and cache under `dir`.
pub struct Apt {
    dir: PathBuf,
}

impl Apt {
    pub fn new(dir: PathBuf, sources: &str) -> anyhow::Result<Self> {
        for sub in ["etc", "state/lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(dir.join("etc/sources.list"), sources)?;
        Ok(Apt { dir })
    }

    fn opts(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            format!("-oDir::Etc::SourceList={d}/etc/sources.list"),
            "-oDir::Etc::SourceParts=/dev/null".into(),
            format!("-oDir::State={d}/state"),
            format!("-oDir::Cache={d}/cache"),
            "-oDir::State::status=/dev/null".into(),
            "-oDebug::NoLocking=1".into(),
            "-oAPT::Sandbox::User=root".into(),
        ]
    }

    fn update(&self) -> anyhow::Result<()> {
        let marker = self.dir.join("updated");
        if marker.exists() {
            return Ok(());
        }
        crate::run(Command::new("apt-get").args(self.opts()).args(["update", "-qq"]))?;
        std::fs::write(marker, "")?;
        Ok(())
    }

    /// Package names matching `^{prefix}[0-9.]+{suffix}$`, highest version last.
    fn names(&self, prefix: &str, suffix: &str) -> anyhow::Result<Vec<String>> {
        self.update()?;
        let out = Command::new("apt-cache")
            .args(self.opts())
            .args(["pkgnames", prefix])
            .output()
            .context("apt-cache pkgnames")?;
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|n| {
                n.strip_prefix(prefix).and_then(|r| r.strip_suffix(suffix)).is_some_and(|mid| {
                    !mid.is_empty() && mid.chars().all(|c| c.is_ascii_digit() || c == '.')
                })
            })
            .map(String::from)
            .collect();
        names.sort_by_key(|n| version_key(n));
        Ok(names)
    }

    /// Downloads `package` into `dest` and unpacks it there.
    pub fn fetch(&self, package: &str, dest: &Path) -> anyhow::Result<()> {
        self.update()?;
        let dl = self.dir.join("debs");
        std::fs::create_dir_all(&dl)?;
        crate::run(
            Command::new("apt-get")
                .args(self.opts())
                .args(["download", "-qq", package])
                .current_dir(&dl),
        )?;
        let deb = std::fs::read_dir(&dl)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")))
            })
            .with_context(|| format!("{package}: no .deb after download"))?;
        std::fs::create_dir_all(dest)?;
        crate::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dest))?;
        let _ = std::fs::remove_file(&deb);
        Ok(())
    }
}

/// Numeric parts of a package name, for "highest version" ordering.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The newest kernel package of `spec`, unpacked under `cache` (reused when present).
pub fn fetch(spec: &'static KernelSpec, cache: &Path) -> anyhow::Result<Kernel> {
    let dir = cache.join("kernels").join(spec.name);
    let done = dir.join(".done");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let apt = Apt::new(cache.join("apt").join(spec.name), spec.sources)?;
        let names = apt.names(spec.prefix, spec.suffix)?;
        let Some(pkg) = names.last() else {
            bail!("no package {}<N>{} in Debian's archive", spec.prefix, spec.suffix);
        };
        println!("== fetching {pkg} for {}", spec.name);
        apt.fetch(pkg, &dir)?;
        std::fs::write(&done, pkg)?;
    }
    let vmlinuz = find(&dir.join("boot"), |n| n.starts_with("vmlinuz-"))?;
    let modules = find(&dir.join("lib/modules"), |_| true)?;
    Ok(Kernel { dir, vmlinuz, modules })
}

fn find(dir: &Path, pred: impl Fn(&str) -> bool) -> anyhow::Result<PathBuf> {
    std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&pred))
        .with_context(|| format!("nothing expected in {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_package_sorts_last() {
        let mut v = [
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-48-cloud-amd64",
            "linux-image-6.1.0-10-cloud-amd64",
        ];
        v.sort_by_key(|n| version_key(n));
        assert_eq!(v.last(), Some(&"linux-image-6.1.0-48-cloud-amd64"));
    }
}
