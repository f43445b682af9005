//! Data sets for fine-tuning: plain text as causal-LM chunks, JSONL prompt/completion or chat
//! `messages` (loss on the answers only), and CSV classification rendered as an instruction.

use std::io::Read;
use std::path::Path;

use burn_peft_models::TextTokenizer;
use serde::Deserialize;

use crate::error::{Result, TrainError};
use burn_peft_core::SplitMix64;

/// How a prompt and its answer are laid out as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptFormat {
    /// The prompt, then the answer, then the end-of-sequence token. Chat turns become
    /// `role: content` lines.
    Plain,
    /// ChatML (`<|im_start|>role\n...<|im_end|>`), as SmolLM2 and Qwen are trained, with an
    /// optional system message.
    ChatMl {
        /// The system message, if any.
        system: Option<String>,
    },
}

/// What the samples teach, which decides what evaluation reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Next-token prediction on all tokens (loss and perplexity).
    LanguageModeling,
    /// Answers to prompts (loss, perplexity and exact match of the answer).
    Completion,
    /// One of a fixed set of answers (also accuracy, by the most likely label).
    Classification {
        /// The labels, in class order.
        labels: Vec<String>,
    },
}

/// One tokenized training example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `targets[i]`: token `i` is predicted and counts in the loss.
    pub targets: Vec<bool>,
    /// The class of a classification sample.
    pub label: Option<usize>,
}

impl Sample {
    /// Index of the first loss target, if any.
    pub fn first_target(&self) -> Option<usize> {
        self.targets.iter().position(|&t| t)
    }

    /// This sample's prompt (the tokens before its first target) followed by `answer`, the
    /// answer's tokens the only targets: the same question with another answer.
    ///
    /// ```
    /// use burn_peft_train::Sample;
    /// let s = Sample { ids: vec![5, 6, 7, 8], targets: vec![false, false, true, true], label: None };
    /// let other = s.with_answer(&[9]);
    /// assert_eq!(other.ids, [5, 6, 9]);
    /// assert_eq!(other.targets, [false, false, true]);
    /// ```
    pub fn with_answer(&self, answer: &[u32]) -> Sample {
        let prompt = self.first_target().unwrap_or(self.ids.len());
        let mut ids = self.ids[..prompt].to_vec();
        ids.extend(answer);
        let mut targets = vec![false; prompt];
        targets.extend(std::iter::repeat_n(true, answer.len()));
        Sample {
            ids,
            targets,
            label: None,
        }
    }

    /// Tokens that count in the loss (the first token never does: nothing predicts it).
    pub fn target_count(&self) -> usize {
        self.targets.iter().skip(1).filter(|&&t| t).count()
    }
}

/// Settings for reading a CSV file as a classification task.
///
/// ```
/// use burn_peft_train::CsvTask;
/// let task = CsvTask::new("text", "category")
///     .with_labels(vec!["fresh".into(), "rotten".into()])
///     .with_template("Review: {text}\nIs this review fresh or rotten?");
/// assert_eq!(task.render("Great fun."), "Review: Great fun.\nIs this review fresh or rotten?");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvTask {
    /// The column with the input text.
    pub text_column: String,
    /// The column with the label.
    pub label_column: String,
    /// The labels to keep, in class order (rows with other labels are skipped); `None`: all
    /// labels found, sorted.
    pub labels: Option<Vec<String>>,
    /// The instruction; `{text}` is replaced by the row's text and `{labels}` by the labels.
    pub template: String,
}

impl CsvTask {
    /// Columns `text_column` and `label_column`, all labels, the default template.
    pub fn new(text_column: &str, label_column: &str) -> Self {
        Self {
            text_column: text_column.into(),
            label_column: label_column.into(),
            labels: None,
            template: "{text}\nAnswer with one word: {labels}.".into(),
        }
    }

    /// Keeps only these labels, in this class order.
    pub fn with_labels(mut self, labels: Vec<String>) -> Self {
        self.labels = Some(labels);
        self
    }

    /// Sets the instruction template.
    pub fn with_template(mut self, template: &str) -> Self {
        self.template = template.into();
        self
    }

    /// The instruction for one text.
    pub fn render(&self, text: &str) -> String {
        let labels = self.labels.as_deref().unwrap_or(&[]).join(", ");
        self.template
            .replace("{text}", text.trim())
            .replace("{labels}", &labels)
    }
}

/// Turns text into [`Sample`]s: a tokenizer, a prompt format and a maximum length.
#[derive(Debug, Clone)]
pub struct Encoder<'a> {
    tokenizer: &'a TextTokenizer,
    format: PromptFormat,
    seq_len: usize,
    eos: Option<u32>,
}

impl<'a> Encoder<'a> {
    /// An encoder; `eos` ends plain-format answers. `seq_len` must be at least 2.
    pub fn new(
        tokenizer: &'a TextTokenizer,
        format: PromptFormat,
        seq_len: usize,
        eos: Option<u32>,
    ) -> Result<Self> {
        if seq_len < 2 {
            return Err(TrainError::Config(format!(
                "seq_len {seq_len} is too short: at least 2 tokens"
            )));
        }
        Ok(Self {
            tokenizer,
            format,
            seq_len,
            eos,
        })
    }

    /// The longest sample.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// A text as consecutive chunks of `seq_len` tokens (the last may be shorter), every token a
    /// target.
    pub fn text(&self, text: &str) -> Result<Vec<Sample>> {
        let ids = self.tokenizer.encode(text)?;
        Ok(ids
            .chunks(self.seq_len)
            .filter(|c| c.len() >= 2)
            .map(|c| Sample {
                ids: c.to_vec(),
                targets: vec![true; c.len()],
                label: None,
            })
            .collect())
    }

    /// A prompt and its answer; only the answer (and its end token) is a target. Returns the
    /// sample and whether it had to be shortened.
    pub fn pair(&self, prompt: &str, answer: &str) -> Result<(Sample, bool)> {
        self.turns(&[("user", prompt), ("assistant", answer)])
    }

    /// Chat turns (`user`, `assistant`, `system`); the assistant turns are targets.
    pub fn turns(&self, turns: &[(&str, &str)]) -> Result<(Sample, bool)> {
        Ok(self.fit(self.unfitted_turns(turns)?))
    }

    /// [`turns`](Self::turns) before shortening.
    fn unfitted_turns(&self, turns: &[(&str, &str)]) -> Result<Sample> {
        let mut pieces: Vec<(String, bool)> = Vec::new();
        match &self.format {
            PromptFormat::ChatMl { system } => {
                if let Some(s) = system
                    && !turns.iter().any(|(r, _)| *r == "system")
                {
                    pieces.push((format!("<|im_start|>system\n{s}<|im_end|>\n"), false));
                }
                for (role, content) in turns {
                    if *role == "assistant" {
                        pieces.push(("<|im_start|>assistant\n".into(), false));
                        pieces.push((format!("{content}<|im_end|>"), true));
                        pieces.push(("\n".into(), false));
                    } else {
                        pieces.push((format!("<|im_start|>{role}\n{content}<|im_end|>\n"), false));
                    }
                }
                // The newline after the last answer is not part of the example.
                if matches!(pieces.last(), Some((t, false)) if t == "\n") {
                    pieces.pop();
                }
            }
            PromptFormat::Plain => {
                let single = turns.len() == 2 && turns[0].0 == "user";
                for (role, content) in turns {
                    let target = *role == "assistant";
                    let text = match (single, target) {
                        (true, false) => content.to_string(),
                        (true, true) => format!(" {}", content.trim_start()),
                        (false, _) => format!("{role}: {content}\n"),
                    };
                    pieces.push((text, target));
                }
            }
        }
        let mut ids = Vec::new();
        let mut targets = Vec::new();
        for (i, (text, target)) in pieces.iter().enumerate() {
            let piece = if i == 0 {
                self.tokenizer.encode(text)?
            } else {
                self.tokenizer.encode_piece(text)?
            };
            targets.extend(std::iter::repeat_n(*target, piece.len()));
            ids.extend(piece);
            if *target
                && self.format == PromptFormat::Plain
                && let Some(eos) = self.eos
            {
                ids.push(eos);
                targets.push(true);
            }
        }
        Ok(Sample {
            ids,
            targets,
            label: None,
        })
    }

    /// A question after worked examples: `demos` as earlier user/assistant turns (plain format:
    /// `prompt answer` paragraphs separated by a blank line, without the end token), then
    /// `prompt` and its `answer`, laid out as [`pair`](Self::pair) lays it out. Only the last
    /// answer (and its end token) is a target: the demonstrations are context, as in-context
    /// learning shows them. Returns the sample and whether it had to be shortened (drop
    /// demonstrations until it is not); a shortened sample keeps its final answer.
    ///
    /// ```
    /// # use burn_peft_models::TextTokenizer;
    /// # use burn_peft_train::{Encoder, PromptFormat};
    /// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-llama/tokenizer.json");
    /// let tokenizer = TextTokenizer::from_file(path.as_ref())?;
    /// let encoder = Encoder::new(&tokenizer, PromptFormat::Plain, 256, Some(0))?;
    /// let (sample, shortened) =
    ///     encoder.few_shot(&[("2 + 2 =", "4"), ("3 + 3 =", "6")], "4 + 4 =", "8")?;
    /// let (alone, _) = encoder.pair("4 + 4 =", "8")?;
    /// assert!(!shortened);
    /// assert_eq!(sample.target_count(), alone.target_count());
    /// # Ok::<(), burn_peft_train::TrainError>(())
    /// ```
    pub fn few_shot(
        &self,
        demos: &[(&str, &str)],
        prompt: &str,
        answer: &str,
    ) -> Result<(Sample, bool)> {
        if self.format == PromptFormat::Plain {
            // As `pair` lays out one question, so that the answer's tokens are the same.
            let context: String = demos.iter().map(|(p, a)| format!("{p} {a}\n\n")).collect();
            return self.pair(&format!("{context}{prompt}"), answer);
        }
        let mut turns: Vec<(&str, &str)> = Vec::with_capacity(2 * demos.len() + 2);
        for (p, a) in demos {
            turns.push(("user", p));
            turns.push(("assistant", a));
        }
        turns.push(("user", prompt));
        turns.push(("assistant", answer));
        let mut sample = self.unfitted_turns(&turns)?;
        // Keep the last run of targets (the final answer) only, before shortening, so that a
        // cut keeps the final answer.
        if let Some(end) = sample.targets.iter().rposition(|&t| t) {
            let start = sample.targets[..end]
                .iter()
                .rposition(|&t| !t)
                .map_or(0, |i| i + 1);
            sample.targets[..start].iter_mut().for_each(|t| *t = false);
        }
        Ok(self.fit(sample))
    }

    /// The tokens of `answer` exactly as they appear as a target after a prompt.
    pub fn answer_ids(&self, answer: &str) -> Result<Vec<u32>> {
        let (sample, _) = self.pair("", answer)?;
        Ok(sample
            .ids
            .iter()
            .zip(&sample.targets)
            .filter(|(_, t)| **t)
            .map(|(i, _)| *i)
            .collect())
    }

    /// Shortens a sample to `seq_len`: from the left while the targets still fit (the end of a
    /// prompt matters most), else from the right.
    fn fit(&self, mut s: Sample) -> (Sample, bool) {
        let n = s.ids.len();
        if n <= self.seq_len {
            return (s, false);
        }
        let first = s.first_target().unwrap_or(n);
        if n - first < self.seq_len {
            let cut = n - self.seq_len;
            s.ids.drain(..cut);
            s.targets.drain(..cut);
        } else {
            s.ids.truncate(self.seq_len);
            s.targets.truncate(self.seq_len);
        }
        (s, true)
    }
}

/// Tokenized samples and the task they teach.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The samples.
    pub samples: Vec<Sample>,
    /// What they teach.
    pub task: Task,
    /// For classification: each label's answer tokens.
    pub label_ids: Vec<Vec<u32>>,
    /// Samples that were shortened to fit `seq_len`.
    pub truncated: usize,
}

#[derive(Deserialize)]
struct JsonlRecord {
    prompt: Option<String>,
    completion: Option<String>,
    messages: Option<Vec<Message>>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: String,
}

/// The most a compressed data file may decompress to (1 GiB).
pub const MAX_TEXT_BYTES: u64 = 1 << 30;

/// Reads a file, decompressing `.bz2` (every stream of a multi-stream file, as `pbzip2` and
/// Wikipedia dumps write, to at most [`MAX_TEXT_BYTES`] in all).
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let bytes = if path.extension().is_some_and(|e| e == "bz2") {
        // Decompressed up to a bound: a few bytes of bzip2 can expand to gigabytes.
        let mut out = Vec::new();
        bzip2::read::MultiBzDecoder::new(bytes.as_slice())
            .take(MAX_TEXT_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| TrainError::data(path, 0, format!("not a valid bzip2 file: {e}")))?;
        if out.len() as u64 > MAX_TEXT_BYTES {
            return Err(TrainError::data(
                path,
                0,
                format!(
                    "decompresses to more than {} MiB, the most a data file may hold",
                    MAX_TEXT_BYTES >> 20
                ),
            ));
        }
        out
    } else {
        bytes
    };
    String::from_utf8(bytes).map_err(|e| TrainError::data(path, 0, format!("not UTF-8: {e}")))
}

impl Dataset {
    /// Plain text as causal-LM chunks.
    pub fn from_text(text: &str, encoder: &Encoder) -> Result<Self> {
        Ok(Self {
            samples: encoder.text(text)?,
            task: Task::LanguageModeling,
            label_ids: Vec::new(),
            truncated: 0,
        })
    }

    /// JSONL with one object per line: `{"prompt", "completion"}`, `{"messages": [{"role",
    /// "content"}, ...]}` or `{"text"}`. `path` is only used in error messages.
    pub fn from_jsonl(content: &str, path: &Path, encoder: &Encoder) -> Result<Self> {
        let mut samples = Vec::new();
        let mut truncated = 0;
        let mut lm = 0;
        let mut lm_samples = 0;
        for (i, line) in content.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let r: JsonlRecord =
                serde_json::from_str(line).map_err(|e| TrainError::data(path, i + 1, e))?;
            let (sample, cut) = match (r.prompt, r.completion, r.messages, r.text) {
                (Some(p), Some(c), None, None) => encoder.pair(&p, &c)?,
                (None, None, Some(m), None) => {
                    if !m.iter().any(|m| m.role == "assistant") {
                        return Err(TrainError::data(path, i + 1, "no assistant message"));
                    }
                    if let Some(bad) = m
                        .iter()
                        .find(|m| !["system", "user", "assistant"].contains(&m.role.as_str()))
                    {
                        return Err(TrainError::data(
                            path,
                            i + 1,
                            format!("unknown role '{}'", bad.role),
                        ));
                    }
                    let turns: Vec<(&str, &str)> = m
                        .iter()
                        .map(|m| (m.role.as_str(), m.content.as_str()))
                        .collect();
                    encoder.turns(&turns)?
                }
                (None, None, None, Some(t)) => {
                    lm += 1;
                    let chunks = encoder.text(&t)?;
                    lm_samples += chunks.len();
                    samples.extend(chunks);
                    continue;
                }
                _ => {
                    return Err(TrainError::data(
                        path,
                        i + 1,
                        "expected {\"prompt\", \"completion\"}, {\"messages\"} or {\"text\"}",
                    ));
                }
            };
            truncated += cut as usize;
            samples.push(sample);
        }
        let pairs = samples.len() - lm_samples;
        let task = if lm > 0 && pairs == 0 {
            Task::LanguageModeling
        } else {
            Task::Completion
        };
        Self::checked(
            Self {
                samples,
                task,
                label_ids: Vec::new(),
                truncated,
            },
            path,
        )
    }

    /// A CSV classification data set: each row's text rendered as an instruction, its label
    /// as the answer.
    pub fn from_csv(content: &str, path: &Path, task: &CsvTask, encoder: &Encoder) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(content.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| TrainError::data(path, 1, e))?
            .clone();
        let column = |name: &str| {
            headers.iter().position(|h| h == name).ok_or_else(|| {
                TrainError::data(
                    path,
                    1,
                    format!(
                        "no column '{name}' (columns: {})",
                        headers.iter().collect::<Vec<_>>().join(", ")
                    ),
                )
            })
        };
        let (tc, lc) = (column(&task.text_column)?, column(&task.label_column)?);
        let mut rows = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| TrainError::data(path, i + 2, e))?;
            let text = record.get(tc).unwrap_or_default().to_string();
            let label = record.get(lc).unwrap_or_default().trim().to_string();
            if !text.trim().is_empty() {
                rows.push((text, label));
            }
        }
        let labels = match &task.labels {
            Some(l) => l.clone(),
            None => {
                let mut l: Vec<String> = rows.iter().map(|(_, l)| l.clone()).collect();
                l.sort();
                l.dedup();
                l
            }
        };
        if let Some(asked) = &task.labels {
            // A label asked for and never found is a typo or the wrong column: its rows would
            // be missing without a word.
            for (i, label) in asked.iter().enumerate() {
                if asked[..i].contains(label) {
                    return Err(TrainError::data(
                        path,
                        0,
                        format!("label '{label}' is given twice"),
                    ));
                }
                if !rows.iter().any(|(_, l)| l == label) {
                    let mut found: Vec<&str> = rows.iter().map(|(_, l)| l.as_str()).collect();
                    found.sort_unstable();
                    found.dedup();
                    found.truncate(10);
                    return Err(TrainError::data(
                        path,
                        0,
                        format!(
                            "label '{label}' has no rows in column '{}' (labels there: {})",
                            task.label_column,
                            found.join(", ")
                        ),
                    ));
                }
            }
        }
        if labels.len() < 2 {
            return Err(TrainError::data(
                path,
                0,
                format!("classification needs at least 2 labels, found {labels:?}"),
            ));
        }
        let task = CsvTask {
            labels: Some(labels.clone()),
            ..task.clone()
        };
        let mut samples = Vec::new();
        let mut truncated = 0;
        for (text, label) in rows {
            let Some(class) = labels.iter().position(|l| *l == label) else {
                continue;
            };
            let (mut sample, cut) = encoder.pair(&task.render(&text), &label)?;
            sample.label = Some(class);
            truncated += cut as usize;
            samples.push(sample);
        }
        let label_ids = labels
            .iter()
            .map(|l| encoder.answer_ids(l))
            .collect::<Result<Vec<_>>>()?;
        Self::checked(
            Self {
                samples,
                task: Task::Classification { labels },
                label_ids,
                truncated,
            },
            path,
        )
    }

    fn checked(self, path: &Path) -> Result<Self> {
        if self.samples.is_empty() {
            return Err(TrainError::data(path, 0, "no usable examples"));
        }
        Ok(self)
    }

    /// Loads a file by its extension: `.txt`/`.cor`/`.md` as text, `.jsonl` as JSONL, `.csv`
    /// as classification with `csv` (required then); each may end in `.bz2`.
    pub fn load(path: &Path, encoder: &Encoder, csv: Option<&CsvTask>) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let stem = name.strip_suffix(".bz2").unwrap_or(&name);
        let content = read_text(path)?;
        if stem.ends_with(".jsonl") {
            Self::from_jsonl(&content, path, encoder)
        } else if stem.ends_with(".csv") {
            let task = csv.ok_or_else(|| {
                TrainError::Config(format!(
                    "{}: CSV data needs its text and label columns (a CsvTask)",
                    path.display()
                ))
            })?;
            Self::from_csv(&content, path, task, encoder)
        } else if stem.ends_with(".txt") || stem.ends_with(".cor") || stem.ends_with(".md") {
            Self::checked(Self::from_text(&content, encoder)?, path)
        } else {
            Err(TrainError::data(
                path,
                0,
                "unknown data format: expected .txt, .cor, .md, .jsonl or .csv (optionally .bz2)",
            ))
        }
    }

    /// Shuffles with `seed` and splits off up to `eval` samples for evaluation (at least one
    /// sample stays for training).
    pub fn split(mut self, eval: usize, seed: u64) -> Result<(Self, Self)> {
        if self.samples.len() < 2 && eval > 0 {
            return Err(TrainError::Config(
                "need at least 2 samples to hold some out for evaluation".into(),
            ));
        }
        SplitMix64::new(seed).shuffle(&mut self.samples);
        let n = eval.min(self.samples.len() - 1);
        let held = self.samples.split_off(self.samples.len() - n);
        let eval = Self {
            samples: held,
            task: self.task.clone(),
            label_ids: self.label_ids.clone(),
            truncated: 0,
        };
        Ok((self, eval))
    }

    /// Keeps the first `n` samples.
    pub fn take(mut self, n: usize) -> Self {
        self.samples.truncate(n);
        self
    }

    /// Target tokens over all samples.
    pub fn target_tokens(&self) -> usize {
        self.samples.iter().map(Sample::target_count).sum()
    }
}
