//! Reading task logs back from the files the log driver writes: the last N lines across rotated
//! files, then (follow) new lines as they are appended, surviving rotation. Runs on a thread of
//! its own feeding a channel, so a slow consumer never blocks the async runtime.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::log_driver::{log_path, LogRecord};
use super::{LogStream, LogStreamKind, RuntimeError, TaskLogLine};

const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// A followed log file missing this long means the replica was removed.
const GONE_AFTER: Duration = Duration::from_secs(1);
const CHANNEL_DEPTH: usize = 256;

/// Log files of a container, oldest first (`.N` ... `.1`, then the current file).
pub fn log_files(dir: &Path, container_id: &str) -> Vec<PathBuf> {
    let prefix = format!("{container_id}.log.");
    let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let n = name.strip_prefix(&prefix)?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    let current = log_path(dir, container_id);
    if current.exists() {
        files.push(current);
    }
    files
}

/// Removes all log files of a container (current and rotated).
pub fn remove_log_files(dir: &Path, container_id: &str) -> io::Result<()> {
    for file in log_files(dir, container_id) {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// One stored line turned into a `TaskLogLine`; None for lines that are not ours.
pub fn parse_record(line: &str) -> Option<TaskLogLine> {
    let record: LogRecord = serde_json::from_str(line).ok()?;
    let stream = match record.stream.as_str() {
        "stdout" => LogStreamKind::Stdout,
        "stderr" => LogStreamKind::Stderr,
        _ => return None,
    };
    let time =
        time::OffsetDateTime::parse(&record.time, &time::format_description::well_known::Rfc3339)
            .map(SystemTime::from)
            .unwrap_or(SystemTime::UNIX_EPOCH);
    Some(TaskLogLine {
        time,
        stream,
        line: record.line,
    })
}

/// The last `tail` complete lines of `files` (all when None), oldest first.
fn tail_lines(files: &[PathBuf], tail: Option<usize>) -> Vec<String> {
    let mut collected: Vec<String> = Vec::new();
    // Newest file first, so a small tail reads only the current file.
    for file in files.iter().rev() {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        let mut lines: Vec<String> = complete
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        lines.append(&mut collected);
        collected = lines;
        if tail.is_some_and(|n| collected.len() >= n) {
            break;
        }
    }
    if let Some(n) = tail {
        let skip = collected.len().saturating_sub(n);
        collected.drain(..skip);
    }
    collected
}

/// Follows the current file across rotations, handing out complete lines.
struct Follower {
    path: PathBuf,
    file: Option<File>,
    inode: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Starts at the end of what `tail_lines` has already returned: the current file's last
    /// complete line.
    fn start(path: PathBuf) -> Follower {
        let mut follower = Follower {
            path,
            file: None,
            inode: 0,
            partial: Vec::new(),
        };
        if let Ok(mut file) = File::open(&follower.path) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let start = complete_prefix_len(&mut file, len);
            if file.seek(SeekFrom::Start(start)).is_ok() {
                follower.inode = file.metadata().map(|m| m.ino()).unwrap_or(0);
                follower.file = Some(file);
            }
        }
        follower
    }

    fn read_available(&mut self, out: &mut Vec<String>) {
        if let Some(file) = self.file.as_mut() {
            let mut buf = Vec::new();
            if file.read_to_end(&mut buf).is_ok() {
                self.partial.extend_from_slice(&buf);
            }
        }
        while let Some(pos) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            if !text.is_empty() {
                out.push(text);
            }
        }
    }

    /// New complete lines since the last call.
    fn poll(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        self.read_available(&mut out);
        let current_inode = std::fs::metadata(&self.path).map(|m| m.ino()).ok();
        if current_inode.is_some() && current_inode != Some(self.inode) {
            // Rotated (or created): the old handle is drained above. Files rotated after ours
            // come next (several rotations may fit between two polls), then the new file.
            self.partial.clear();
            for file in self.rotated_since_ours() {
                out.extend(complete_lines(&file));
            }
            self.file = File::open(&self.path).ok();
            self.inode = current_inode.unwrap_or(0);
            self.read_available(&mut out);
        }
        out
    }

    /// Rotated files newer than the one we were reading, oldest first.
    fn rotated_since_ours(&self) -> Vec<PathBuf> {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Vec::new();
        };
        let container_id = name.to_string_lossy();
        let container_id = container_id.trim_end_matches(".log");
        let mut rotated = log_files(dir, container_id);
        rotated.retain(|p| p != &self.path);
        if self.file.is_none() {
            return rotated;
        }
        let ours = rotated
            .iter()
            .position(|p| std::fs::metadata(p).map(|m| m.ino()).ok() == Some(self.inode));
        match ours {
            Some(pos) => rotated.split_off(pos + 1),
            // Ours was deleted already: everything still there is newer.
            None => rotated,
        }
    }
}

fn complete_lines(path: &Path) -> Vec<String> {
    tail_lines(&[path.to_path_buf()], None)
}

/// Length of `file` up to and including its last newline.
fn complete_prefix_len(file: &mut File, len: u64) -> u64 {
    let mut end = len;
    let mut byte = [0u8; 1];
    while end > 0 {
        if file.seek(SeekFrom::Start(end - 1)).is_err() || file.read_exact(&mut byte).is_err() {
            return 0;
        }
        if byte[0] == b'\n' {
            return end;
        }
        end -= 1;
    }
    0
}

fn send_lines(
    sender: &mpsc::Sender<Result<TaskLogLine, RuntimeError>>,
    lines: Vec<String>,
) -> bool {
    for line in lines {
        if let Some(parsed) = parse_record(&line) {
            if sender.blocking_send(Ok(parsed)).is_err() {
                return false;
            }
        }
    }
    true
}

/// Lines of `container_id` from `dir`: the last `tail` (all when None), then new ones while
/// `follow` and the consumer keeps the stream.
pub fn read_logs(dir: &Path, container_id: &str, tail: Option<usize>, follow: bool) -> LogStream {
    let (sender, receiver) = mpsc::channel(CHANNEL_DEPTH);
    let dir = dir.to_path_buf();
    let container_id = container_id.to_string();
    std::thread::spawn(move || {
        let files = log_files(&dir, &container_id);
        // Set up the follower before reading the tail so no line falls between the two.
        let mut follower = follow.then(|| Follower::start(log_path(&dir, &container_id)));
        let lines = match &follower {
            Some(f) if f.file.is_some() => {
                let rotated = &files[..files.len().saturating_sub(1)];
                let mut lines = tail_lines(rotated, None);
                let current = read_prefix(&f.path, &f.file);
                lines.extend(current);
                let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
                lines.drain(..skip);
                lines
            }
            _ => tail_lines(&files, tail),
        };
        if !send_lines(&sender, lines) {
            return;
        }
        let Some(follower) = follower.as_mut() else {
            return;
        };
        let mut missing_since: Option<Instant> = None;
        while !sender.is_closed() {
            std::thread::sleep(FOLLOW_POLL);
            if !send_lines(&sender, follower.poll()) {
                return;
            }
            // Removing the replica deletes its logs: then there is nothing left to follow.
            // (During a rotation the file is missing only between a rename and an open.)
            if follower.path.exists() {
                missing_since = None;
            } else if follower.file.is_some() {
                let since = *missing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= GONE_AFTER {
                    return;
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

/// Complete lines of the current file up to where the follower starts reading.
fn read_prefix(path: &Path, handle: &Option<File>) -> Vec<String> {
    let Some(handle) = handle else {
        return Vec::new();
    };
    let Ok(mut file) = handle.try_clone() else {
        return Vec::new();
    };
    let end = file.stream_position().unwrap_or(0);
    let Ok(mut reader) = File::open(path) else {
        return Vec::new();
    };
    let same_file =
        reader.metadata().map(|m| m.ino()).ok() == file.metadata().map(|m| m.ino()).ok();
    if !same_file {
        return Vec::new();
    }
    let mut buf = vec![0u8; usize::try_from(end).unwrap_or(0)];
    if reader.read_exact(&mut buf).is_err() {
        return Vec::new();
    }
    // The clone shares the offset with the follower's handle: put it back.
    let _ = file.seek(SeekFrom::Start(end));
    String::from_utf8_lossy(&buf)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
#[path = "tests/logs.rs"]
mod tests;
