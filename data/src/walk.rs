//! The one folder walker: which files of a folder tree a data set holds, and in which order.
//!
//! Training and evaluation list images the way torchvision's `ImageFolder` does, so that a
//! class index or an item's position means the same in both: entries sorted by name, folders
//! by path and the files within each folder by name (`sorted(os.walk(...))`), extensions
//! compared case-insensitively (`.JPEG`). Unlike torchvision, hidden names (starting with `.`)
//! are skipped, so that `.ipynb_checkpoints` or `.DS_Store` is neither a class nor an image.

use std::path::{Path, PathBuf};

use crate::DatasetError;
use crate::error::{io_error, layout_error};

/// File extensions (compared case-insensitively) of the images the folder readers list: the
/// formats `engine::decode` reads, torchvision's `IMG_EXTENSIONS` minus those it cannot.
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "bmp", "webp", "gif"];

/// The extension of ImageNet-P's videos.
pub const VIDEO_EXTENSIONS: [&str; 1] = ["mp4"];

/// How deep the walker descends below the folder it starts from; guards against symlink loops.
pub const MAX_FOLDER_DEPTH: usize = 32;

/// Whether the last component of `path` is hidden (starts with `.`).
pub fn is_hidden(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
}

/// Whether `path` ends in one of `extensions`, compared case-insensitively.
pub fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The non-hidden entries of `dir`, sorted by name.
pub fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if !is_hidden(&path) {
            entries.push(path);
        }
    }
    entries.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    Ok(entries)
}

/// The non-hidden sub-folders of `dir` with their names, sorted by name: the classes of an
/// ImageFolder tree, in the order torchvision numbers them. An error if `dir` is not a folder.
pub fn sub_folders(dir: &Path) -> Result<Vec<(String, PathBuf)>, DatasetError> {
    if !dir.is_dir() {
        return Err(layout_error(dir, "not a folder"));
    }
    Ok(sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .map(|p| {
            (
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                p,
            )
        })
        .collect())
}

/// All files below `dir` (recursively, at most [`MAX_FOLDER_DEPTH`] levels) with one of
/// `extensions`, in torchvision's order (`sorted(os.walk)` then sorted file names): by folder
/// path, then by name. Anything that is not a folder counts as a file, as in `os.walk`, so a
/// broken link named `x.jpg` is listed (and fails, naming itself, when it is read).
pub fn files_below(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>, DatasetError> {
    let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((folder, depth)) = stack.pop() {
        for path in sorted_entries(&folder)? {
            if path.is_dir() {
                if depth + 1 > MAX_FOLDER_DEPTH {
                    return Err(layout_error(
                        &path,
                        format!("more than {MAX_FOLDER_DEPTH} folder levels (a symlink loop?)"),
                    ));
                }
                stack.push((path, depth + 1));
            } else if has_extension(&path, extensions) {
                found.push((folder.clone(), path));
            }
        }
    }
    found.sort_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()).then_with(|| a.1.cmp(&b.1)));
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// `path` relative to `root` with `/` separators: an item's key.
pub fn relative_key(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }

    /// Folders by path, files by name within each, hidden names and other extensions left out.
    #[test]
    fn files_come_in_torchvisions_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "b.png",
            "A.PNG",
            "sub/c.jpg",
            "sub-x/d.jpg",
            "sub/deeper/e.gif",
            ".hidden/f.png",
            "sub/.g.png",
            "notes.txt",
        ] {
            touch(&root.join(f));
        }
        let files: Vec<String> = files_below(root, &IMAGE_EXTENSIONS)
            .unwrap()
            .iter()
            .map(|p| relative_key(root, p))
            .collect();
        // Folders sort as the strings `os.walk` yields: `sub` < `sub-x` < `sub/deeper` ('-' < '/').
        assert_eq!(
            files,
            ["A.PNG", "b.png", "sub/c.jpg", "sub-x/d.jpg", "sub/deeper/e.gif"]
        );
        let folders: Vec<String> = sub_folders(root).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(folders, ["sub", "sub-x"]);
        assert!(
            sub_folders(&root.join("b.png"))
                .unwrap_err()
                .to_string()
                .contains("not a folder")
        );
        assert!(files_below(&root.join("missing"), &IMAGE_EXTENSIONS).is_err());
        assert!(has_extension(Path::new("x.MP4"), &VIDEO_EXTENSIONS));
        assert!(is_hidden(Path::new("a/.b")) && !is_hidden(Path::new(".a/b")));
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_end_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("a/loop")).unwrap();
        let e = files_below(dir.path(), &IMAGE_EXTENSIONS).unwrap_err().to_string();
        assert!(e.contains("symlink loop"), "{e}");
    }
}
