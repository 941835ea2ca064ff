//! `umi man DIR`: man pages generated from the command-line definitions, `umi.1` and one
//! page per subcommand (`umi-run.1`, `umi-eval-static.1`, ...), as clap users expect.

use std::path::Path;

use anyhow::Context;

pub fn write_pages(root: clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let root = root.name("umi");
    write_page(&root, "umi", dir)?;
    Ok(())
}

/// Writes `cmd`'s page as `<name>.1`, then its subcommands' as `<name>-<sub>.1`.
fn write_page(cmd: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<()> {
    let cmd = cmd.clone().name(name.to_string());
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .with_context(|| format!("rendering the man page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    super::support::output::write_atomically(&path, &page)?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_page(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}
