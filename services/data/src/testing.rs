//! Test inputs shared by umi-data's tests and the whole-system tests.

use std::path::{Path, PathBuf};

use crate::stage1::{ANSWER_GROUPS, TEST_SETS};

/// The ToolBench folder the fixture script (`scripts/make_glpft_fixture.py`) feeds the
/// reference's scripts, laid out under `at`: `data/toolbench-real`'s answer files, each
/// also under the id `<id>00`, and the test ids of `tests/fixtures/glpft/toolbench-real`.
/// `repo` is the checkout's root.
pub fn toolbench_fixture(repo: &Path, at: &Path) -> std::io::Result<PathBuf> {
    let data = at.join("toolbench");
    for group in ANSWER_GROUPS {
        let dest = data.join("answer").join(group);
        std::fs::create_dir_all(&dest)?;
        for entry in std::fs::read_dir(repo.join("data/toolbench-real/answer").join(group))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let (id, rest) = name.split_once('_').unwrap_or((&name, ""));
            std::fs::copy(&path, dest.join(&name))?;
            std::fs::copy(&path, dest.join(format!("{id}00_{rest}")))?;
        }
    }
    let ids = data.join("test_query_ids");
    std::fs::create_dir_all(&ids)?;
    for set in TEST_SETS {
        let name = format!("{set}.json");
        std::fs::copy(
            repo.join("tests/fixtures/glpft/toolbench-real/test_query_ids")
                .join(&name),
            ids.join(&name),
        )?;
    }
    Ok(data)
}
