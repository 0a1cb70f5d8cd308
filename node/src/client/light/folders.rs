//! Where light folders live when no `--light` is given: one per chain under a root
//! (`$MEDCHAIN_LIGHT_ROOT`, else `~/.medchain/light`), named by its chain id. Once a chain's
//! folder exists (`medchain light sync --genesis FILE` makes it), every client command that talks
//! to a node of that chain verifies against it without being told to.

use std::path::{Path, PathBuf};

use super::GENESIS_FILE;

/// The root of the default light folders, if there is a home to put it in.
pub fn root() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MEDCHAIN_LIGHT_ROOT") {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".medchain").join("light"))
}

/// The default folder of chain `chain_id` under `root`, if the id is a plain folder name.
pub fn folder(root: &Path, chain_id: &str) -> Option<PathBuf> {
    let plain = !chain_id.is_empty()
        && !chain_id.starts_with('.')
        && chain_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    plain.then(|| root.join(chain_id))
}

/// The chains `root` keeps a light folder for (a folder with a genesis file), sorted.
pub fn kept(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut chains: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join(GENESIS_FILE).is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    chains.sort();
    chains
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_gets_its_own_folder_and_only_plain_ids_name_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            folder(dir.path(), "hospital-a"),
            Some(dir.path().join("hospital-a"))
        );
        for bad in ["", "..", "../etc", "a/b", ".hidden", "a b"] {
            assert_eq!(folder(dir.path(), bad), None, "{bad:?}");
        }
        assert!(kept(dir.path()).is_empty());
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b").join(GENESIS_FILE), "").unwrap();
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        assert_eq!(kept(dir.path()), vec!["b".to_string()]);
    }
}
