//! The whole preprocessing in one pass, as `GLPFT/scripts/prepro_toolbench.sh` runs the
//! six scripts: each trajectory goes through stage 1, stage 2 and the four role scripts
//! before the next is read, so memory holds one trajectory however big the input, and
//! every output file is written element by element and put in place when it is complete
//! (an interrupted run leaves the old files, or none; running it again starts over).
//!
//! Output layout, as the reference's script writes it: `OUT/raw_data/raw_data_stage_1.json`,
//! `OUT/raw_data/raw_data_stage_2.json` and `OUT/train_<mode>.json`.

use std::cell::Cell;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde_json::Value;
use umi_core::static_backbone::GiveUpInput;

use crate::error::{DataError, Result};
use crate::json_array::{for_each_element, ArrayWriter};
use crate::roles::{Endings, RoleSamples, Templates};
use crate::stage1::{answer_files, test_ids, trajectory, REFERENCE_LIMIT};
use crate::stage2::conversations;

pub const RAW_DIR: &str = "raw_data";
pub const STAGE_1_FILE: &str = "raw_data_stage_1.json";
pub const STAGE_2_FILE: &str = "raw_data_stage_2.json";
pub const MODES: [&str; 4] = ["backbone", "planner", "caller", "summarizer"];

/// Where the pipeline starts.
#[derive(Debug, Clone)]
pub enum Source {
    /// ToolBench's data folder (`answer/G*_answer/`, `test_query_ids/`): all six scripts.
    ToolBench(PathBuf),
    /// A `raw_data_stage_1.json`: stage 2 and the role scripts.
    Stage1(PathBuf),
    /// A `raw_data_stage_2.json`: the role scripts.
    Stage2(PathBuf),
}

/// The reference's behaviour by default; each fix is named.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub templates: Templates,
    /// Keep every trajectory rather than stage 1's first 20.
    pub all_trajectories: bool,
    /// The backbone's give-up prompt: the previous step's (the script's) or its own.
    pub give_up: GiveUpInput,
    /// Leave out, and count, the trajectories a script would stop on, rather than stop.
    pub skip_invalid: bool,
}

/// How far a run is: answer files read (a ToolBench folder) or bytes read (a stage file),
/// and conversations processed.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub unit: Unit,
    pub conversations: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Files,
    Bytes,
}

/// A trajectory left out under [`Options::skip_invalid`].
#[derive(Debug, Clone)]
pub struct Skipped {
    pub input: String,
    pub problem: String,
}

/// What a run wrote.
#[derive(Debug, Default)]
pub struct Summary {
    /// Each file written and its number of records, in the order written.
    pub files: Vec<(PathBuf, usize)>,
    pub backbone_endings: Endings,
    pub planner_endings: Endings,
    /// Answer files with no `train_messages` (runs without a valid chain).
    pub without_train_messages: usize,
    /// Answer files not read because stage 1 had its 20 trajectories.
    pub unread_files: usize,
    pub skipped: Vec<Skipped>,
}

/// Runs the scripts from `source`, writing under `out`.
pub fn run(
    source: &Source,
    out: &Path,
    options: &Options,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Summary> {
    let raw_dir = out.join(RAW_DIR);
    let writes_stage1 = matches!(source, Source::ToolBench(_));
    let writes_stage2 = !matches!(source, Source::Stage2(_));
    let dir: &Path = if writes_stage2 { &raw_dir } else { out };
    std::fs::create_dir_all(dir).map_err(|e| {
        DataError::Write(umi_durable::WriteError {
            path: dir.to_path_buf(),
            source: e,
        })
    })?;
    let writer = |on: bool, path: PathBuf| on.then(|| ArrayWriter::create(&path)).transpose();
    let mut sinks = Sinks {
        stage1: writer(writes_stage1, raw_dir.join(STAGE_1_FILE))?,
        stage2: writer(writes_stage2, raw_dir.join(STAGE_2_FILE))?,
        roles: MODES
            .iter()
            .map(|m| ArrayWriter::create(&out.join(format!("train_{m}.json"))))
            .collect::<Result<Vec<_>>>()?,
        samples: RoleSamples::new(options.templates, options.give_up),
        skip_invalid: options.skip_invalid,
        conversations: 0,
        summary: Summary::default(),
    };
    match source {
        Source::ToolBench(dir) => from_toolbench(dir, options, &mut sinks, progress)?,
        Source::Stage1(path) => from_file(path, &mut sinks, progress, |s, i, r| s.stage1(i, r))?,
        Source::Stage2(path) => from_file(path, &mut sinks, progress, |s, i, r| s.stage2(i, r))?,
    }
    sinks.finish()
}

fn from_toolbench(
    dir: &Path,
    options: &Options,
    sinks: &mut Sinks,
    progress: &mut dyn FnMut(&Progress),
) -> Result<()> {
    let ids = test_ids(dir)?;
    let files = answer_files(dir, &ids)?;
    let total = files.len() as u64;
    let mut kept = 0;
    for (n, path) in files.iter().enumerate() {
        if !options.all_trajectories && kept == REFERENCE_LIMIT {
            sinks.summary.unread_files = files.len() - n;
            break;
        }
        let name = path.strip_prefix(dir).unwrap_or(path).display().to_string();
        let bytes = std::fs::read(path).map_err(|e| DataError::read(path, e))?;
        let read = serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|answer| trajectory(&answer));
        match read {
            Ok(Some(t)) => {
                kept += 1;
                sinks.stage1(&name, t)?;
            }
            Ok(None) => sinks.summary.without_train_messages += 1,
            Err(problem) => sinks.refuse(&name, "prepro_raw_stage_1.py", problem)?,
        }
        progress(&Progress {
            done: n as u64 + 1,
            total,
            unit: Unit::Files,
            conversations: sinks.conversations as u64,
        });
    }
    Ok(())
}

fn from_file<'t>(
    path: &Path,
    sinks: &mut Sinks<'t>,
    progress: &mut dyn FnMut(&Progress),
    mut each: impl FnMut(&mut Sinks<'t>, &str, Value) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).map_err(|e| DataError::read(path, e))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let read = Rc::new(Cell::new(0));
    let reader = Counting {
        inner: BufReader::with_capacity(1 << 20, file),
        read: Rc::clone(&read),
    };
    let name = path.display().to_string();
    for_each_element(&name, reader, |i, record| {
        each(sinks, &format!("{name} record {i}"), record)?;
        progress(&Progress {
            done: read.get(),
            total,
            unit: Unit::Bytes,
            conversations: sinks.conversations as u64,
        });
        Ok(())
    })
}

/// The open output files and the role scripts' state.
struct Sinks<'t> {
    stage1: Option<ArrayWriter>,
    stage2: Option<ArrayWriter>,
    /// In [`MODES`] order.
    roles: Vec<ArrayWriter>,
    samples: RoleSamples<'t>,
    skip_invalid: bool,
    conversations: usize,
    summary: Summary,
}

impl Sinks<'_> {
    fn stage1(&mut self, input: &str, trajectory: Value) -> Result<()> {
        if let Some(w) = &mut self.stage1 {
            w.push(&trajectory)?;
        }
        match conversations(&trajectory) {
            Ok(record) => self.stage2(input, record),
            Err(problem) => self.refuse(input, "prepro_raw_stage_2.py", problem),
        }
    }

    fn stage2(&mut self, input: &str, record: Value) -> Result<()> {
        if let Some(w) = &mut self.stage2 {
            w.push(&record)?;
        }
        let index = self.conversations;
        self.conversations += 1;
        match self.samples.conversation(index, &record) {
            Ok(records) => {
                let files = [
                    records.backbone,
                    records.planner,
                    records.caller,
                    records.summarizer,
                ];
                for (writer, records) in self.roles.iter_mut().zip(files) {
                    for r in &records {
                        writer.push(r)?;
                    }
                }
                self.summary.backbone_endings += records.backbone_endings;
                self.summary.planner_endings += records.planner_endings;
                Ok(())
            }
            Err(problem) => self.refuse(input, "the role scripts", problem),
        }
    }

    /// A trajectory the reference's `script` stops on.
    fn refuse(&mut self, input: &str, script: &str, problem: String) -> Result<()> {
        if self.skip_invalid {
            self.summary.skipped.push(Skipped {
                input: input.to_string(),
                problem: format!("{script}: {problem}"),
            });
            return Ok(());
        }
        Err(DataError::invalid(
            input,
            format!("{problem} ({script} would stop here)"),
        ))
    }

    fn finish(self) -> Result<Summary> {
        let mut summary = self.summary;
        let writers = [self.stage1, self.stage2]
            .into_iter()
            .flatten()
            .chain(self.roles);
        for writer in writers {
            let path = writer.path().to_path_buf();
            let len = writer.finish()?;
            summary.files.push((path, len));
        }
        Ok(summary)
    }
}

/// A reader that counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}
