//! Generated files that are checked in where other things read them (the
//! JSON Schemas in `schema/`, `docs/state.md`). Their test pins the generated
//! text with an insta snapshot, so that a change is reviewed as a snapshot
//! diff (`cargo insta review`), then checks with [`assert_published`] that
//! the published file holds that same text.

use std::path::Path;

/// Checks that the checked-in file at `path` holds `generated`, the text the
/// test has just compared with its insta snapshot.
///
/// When insta writes snapshots in place (`INSTA_UPDATE=always`, as `make
/// schema` and `make docs` run the tests), the file is rewritten with that
/// text too; otherwise a file that differs fails the test with a diff and
/// `regenerate`, the command that rewrites it.
pub fn assert_published(path: &Path, generated: &str, regenerate: &str) {
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    if on_disk == generated {
        return;
    }
    if snapshots_updated_in_place() {
        std::fs::write(path, generated)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let diff = similar::TextDiff::from_lines(on_disk.as_str(), generated);
    panic!(
        "{} is out of date: it is not the text the code generates (which its snapshot \
         holds once accepted); `{regenerate}` rewrites both\n{}",
        path.display(),
        diff.unified_diff()
            .context_radius(3)
            .header("checked in", "generated")
    );
}

/// Whether insta overwrites snapshots rather than failing (`INSTA_UPDATE=always`
/// or `force`): then the published files follow.
fn snapshots_updated_in_place() -> bool {
    matches!(
        std::env::var("INSTA_UPDATE").as_deref(),
        Ok("always" | "1" | "force")
    )
}
