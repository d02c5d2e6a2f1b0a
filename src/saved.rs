//! A run saved in the browser (the page keeps every run in IndexedDB so a reload loses
//! nothing): the settings as a link query, where training is (the `Checkpoint`: weights,
//! momentum, epoch, step, the epoch's order and the shuffle stream) and the curves so far.
//! Stored as a safetensors file: the arrays as tensors, the rest as string metadata, so a
//! damaged entry is refused by name. The run list reads a small summary without the arrays.

use crate::app::Curves;
use crate::model::Rng;
use crate::train::Checkpoint;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};

/// One saved run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedRun {
    /// Unique in this browser ("run-<ms since 1970>").
    pub id: String,
    /// `Settings::to_query` of the run: hyperparameters, dataset, engine, limit.
    pub query: String,
    /// The dataset it trained on, as the page described it.
    pub dataset: String,
    /// Milliseconds since 1970: when it started and when it was saved.
    pub started_ms: f64,
    pub saved_ms: f64,
    /// The epochs the run is set to train (its query may say more after a change).
    pub epochs: usize,
    pub curves: Curves,
    /// The training state; None in the summary the run list reads (and never sent between
    /// the page's threads: the worker keeps it).
    #[serde(skip)]
    pub checkpoint: Option<Checkpoint>,
    /// Where it is, also in the summary: (epoch, step in epoch, global step).
    pub at: (usize, usize, u64),
    /// Its last epoch is done.
    pub done: bool,
    /// The steps of its timeline (the weights kept through training), each stored apart
    /// under `snapshot_key(id, step)`; also in the summary (deleting a run deletes them).
    pub snapshots: Vec<u64>,
    /// Bytes it holds in the browser: its state record and its timeline's snapshots, and
    /// those of the timeline alone (0 in a record saved before they were counted).
    #[serde(default)]
    pub stored_bytes: u64,
    #[serde(default)]
    pub history_bytes: u64,
    /// Why this stored record cannot be used (damaged, or of another version), for the run
    /// list, which shows it so it can be deleted; never stored.
    #[serde(default)]
    pub problem: Option<String>,
}

/// The most any run's byte counts are read as (a damaged record's are bounded by it).
const MAX_STORED_BYTES: u64 = 1 << 40;

/// The most the saved runs' timelines (their kept weights, the part of a run that can go
/// without losing the run) may hold together in the browser: 512 MiB, or a quarter of what the
/// browser gives the page where that is less.
pub fn history_budget(quota: Option<f64>) -> u64 {
    const MOST: u64 = 512 << 20;
    match quota {
        Some(q) if q.is_finite() && q >= 0.0 => MOST.min((q / 4.0) as u64),
        _ => MOST,
    }
}

/// The runs whose timelines go so that all the runs' timelines fit in `budget` bytes: the
/// least recently saved first, never one `keep` keeps (the run being trained, say) and never a
/// run's state (it is what a resume needs).
pub fn histories_to_drop(runs: &[SavedRun], budget: u64, keep: &dyn Fn(&SavedRun) -> bool) -> Vec<String> {
    let mut total: u64 = runs.iter().map(|r| r.history_bytes).sum();
    let mut old: Vec<&SavedRun> = runs.iter().filter(|r| r.history_bytes > 0 && !keep(r)).collect();
    old.sort_by(|a, b| a.saved_ms.total_cmp(&b.saved_ms));
    let mut drop = Vec::new();
    for r in old {
        if total <= budget {
            break;
        }
        total -= r.history_bytes;
        drop.push(r.id.clone());
    }
    drop
}

/// The key of a run's kept weights of one step in the browser's "snapshots" store.
pub fn snapshot_key(id: &str, step: u64) -> String {
    format!("{id}@{step}")
}

/// Kept weights [P] as stored (f32, little-endian).
pub fn snapshot_bytes(params: &[f32]) -> Vec<u8> {
    f32_bytes(params)
}

/// Stored kept weights, checked against the `len` floats of the run's network (a cut or
/// damaged value, or one of another network, is refused with what is wrong).
pub fn snapshot_from_bytes(bytes: &[u8], len: usize, what: &str) -> Result<Vec<f32>, String> {
    if bytes.len() != len * 4 {
        return Err(format!("{what}: {} bytes, the network's weights take {}", bytes.len(), len * 4));
    }
    let v: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    if v.iter().any(|x| !x.is_finite()) {
        return Err(format!("{what}: the kept weights are damaged (not finite)"));
    }
    Ok(v)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl SavedRun {
    /// The run list's entry for a record stored under `key` that cannot be read (`problem`
    /// says why): listed, explained, and deletable.
    pub fn unreadable(key: &str, problem: String) -> SavedRun {
        SavedRun {
            id: key.to_string(),
            query: String::new(),
            dataset: String::new(),
            started_ms: 0.0,
            saved_ms: 0.0,
            epochs: 0,
            curves: Curves::default(),
            checkpoint: None,
            at: (0, 0, 0),
            done: false,
            snapshots: Vec::new(),
            stored_bytes: 0,
            history_bytes: 0,
            problem: Some(problem),
        }
    }

    /// A record stored under `key`, read as the run list and a resume use it: its own id must
    /// be its key (Delete and Resume go by the key), else it is unreadable.
    pub fn from_stored(key: &str, bytes: &[u8]) -> SavedRun {
        match SavedRun::from_bytes(bytes, key) {
            Ok(r) if r.id == key => r,
            Ok(r) => SavedRun::unreadable(key, format!("{key}: the record names itself {}, not its key (damaged)", r.id)),
            Err(e) => SavedRun::unreadable(key, e),
        }
    }

    /// The bytes stored: everything (`full`), or the summary without the training state.
    pub fn to_bytes(&self, full: bool) -> Vec<u8> {
        self.encode(if full { self.checkpoint.as_ref() } else { None })
    }

    /// The whole record with `ck` as its training state (a run whose `checkpoint` is None, so
    /// that a save holds one copy of the weights, not two).
    pub fn state_bytes(&self, ck: &Checkpoint) -> Vec<u8> {
        self.encode(Some(ck))
    }

    fn encode(&self, state: Option<&Checkpoint>) -> Vec<u8> {
        let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        let curve = |name: &str, pts: &[(f64, f64)]| {
            (name.to_string(), Dtype::F64, vec![pts.len(), 2], pts.iter().flat_map(|&(x, y)| [x.to_le_bytes(), y.to_le_bytes()]).flatten().collect())
        };
        tensors.push(curve("curve.loss", &self.curves.loss));
        tensors.push(curve("curve.train_accuracy", &self.curves.train_accuracy));
        tensors.push(curve("curve.test_accuracy", &self.curves.test_accuracy));
        let mut meta: HashMap<String, String> = HashMap::new();
        let mut m = |k: &str, v: String| meta.insert(k.to_string(), v);
        m("format", "tabcnn saved run 1".into());
        m("id", self.id.clone());
        m("query", self.query.clone());
        m("dataset", self.dataset.clone());
        m("started_ms", self.started_ms.to_string());
        m("saved_ms", self.saved_ms.to_string());
        m("epochs", self.epochs.to_string());
        m("epoch", self.at.0.to_string());
        m("epoch_step", self.at.1.to_string());
        m("global_step", self.at.2.to_string());
        m("done", self.done.to_string());
        m("snapshots", self.snapshots.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","));
        m("stored_bytes", self.stored_bytes.to_string());
        m("history_bytes", self.history_bytes.to_string());
        if let Some(ck) = state {
            m("images", ck.images.to_string());
            m("seconds", ck.seconds.to_string());
            tensors.push(("params".into(), Dtype::F32, vec![ck.params.len()], f32_bytes(&ck.params)));
            tensors.push(("momentum".into(), Dtype::F32, vec![ck.momentum.len()], f32_bytes(&ck.momentum)));
            tensors.push(("order".into(), Dtype::U32, vec![ck.order.len()], ck.order.iter().flat_map(|x| x.to_le_bytes()).collect()));
            tensors.push(("rng".into(), Dtype::U64, vec![4], ck.rng.state().iter().flat_map(|x| x.to_le_bytes()).collect()));
        }
        let views: BTreeMap<String, TensorView> = tensors.iter().map(|(n, d, shape, b)| (n.clone(), TensorView::new(*d, shape.clone(), b).expect("shape matches data"))).collect();
        safetensors::serialize(views, Some(meta)).expect("serialising in memory cannot fail")
    }

    /// Read a stored run (`what` names it in errors). Without the training tensors it is a
    /// summary (`checkpoint` None).
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<SavedRun, String> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format!("{what}: not a saved run: {e}"))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| format!("{what}: not a saved run: {e}"))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| meta.get(k).cloned().ok_or_else(|| format!("{what}: the saved run has no '{k}'"));
        if get("format")? != "tabcnn saved run 1" {
            return Err(format!("{what}: not a tabcnn saved run (format '{}')", get("format")?));
        }
        fn num<T: std::str::FromStr>(what: &str, k: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{what}: '{k}' is not a number: {v}"))
        }
        let tensor = |name: &str, dtype: Dtype| -> Result<Vec<u8>, String> {
            let t = st.tensor(name).map_err(|_| format!("{what}: the saved run has no {name}"))?;
            if t.dtype() != dtype {
                return Err(format!("{what}: {name} is {:?}, expected {dtype:?}", t.dtype()));
            }
            Ok(t.data().to_vec())
        };
        let curve = |name: &str| -> Result<Vec<(f64, f64)>, String> {
            let b = tensor(name, Dtype::F64)?;
            let v: Vec<f64> = b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
            Ok(v.chunks_exact(2).map(|p| (p[0], p[1])).collect())
        };
        // Stored numbers are bounded before anything uses them (a loop over the epochs, a
        // label, the resume offer), read as u64 first (a page's usize has 32 bits).
        let epochs: u64 = num(what, "epochs", get("epochs")?)?;
        let epoch: u64 = num(what, "epoch", get("epoch")?)?;
        let epoch_step: u64 = num(what, "epoch_step", get("epoch_step")?)?;
        if !(1..=crate::recipe::MAX_EPOCHS as u64).contains(&epochs) || epoch == 0 || epoch > epochs || epoch_step > u32::MAX as u64 {
            return Err(format!("{what}: the saved run is damaged (epoch {epoch} of {epochs}, step {epoch_step}; a run has 1 to {} epochs)", crate::recipe::MAX_EPOCHS));
        }
        let epochs = epochs as usize;
        let at: (usize, usize, u64) = (epoch as usize, epoch_step as usize, num(what, "global_step", get("global_step")?)?);
        let checkpoint = if st.names().contains(&"params") {
            let f32s = |b: Vec<u8>| -> Vec<f32> { b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect() };
            let params = f32s(tensor("params", Dtype::F32)?);
            let momentum = f32s(tensor("momentum", Dtype::F32)?);
            if params.len() != momentum.len() || params.iter().chain(&momentum).any(|v| !v.is_finite()) {
                return Err(format!("{what}: the saved weights are damaged"));
            }
            let order: Vec<u32> = tensor("order", Dtype::U32)?.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
            let rng: Vec<u64> = tensor("rng", Dtype::U64)?.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
            let rng: [u64; 4] = rng.try_into().map_err(|_| format!("{what}: the saved shuffle state is damaged"))?;
            Some(Checkpoint {
                params,
                momentum,
                epoch: at.0,
                epoch_step: at.1,
                global_step: at.2,
                order,
                rng: Rng::from_state(rng),
                images: num(what, "images", get("images")?)?,
                seconds: num(what, "seconds", get("seconds")?)?,
            })
        } else {
            None
        };
        SavedRun {
            id: get("id")?,
            query: get("query")?,
            dataset: get("dataset")?,
            started_ms: num(what, "started_ms", get("started_ms")?)?,
            saved_ms: num(what, "saved_ms", get("saved_ms")?)?,
            epochs,
            curves: {
                // Bounded as a live run's are (a stored record may hold any number of points).
                let mut c = Curves { loss: curve("curve.loss")?, train_accuracy: curve("curve.train_accuracy")?, test_accuracy: curve("curve.test_accuracy")? };
                c.thin(crate::app::MAX_CURVE_POINTS);
                c
            },
            checkpoint,
            at,
            done: get("done")? == "true",
            // Runs saved before timelines were kept have none.
            snapshots: match meta.get("snapshots").map(String::as_str) {
                None | Some("") => Vec::new(),
                Some(v) => {
                    let steps: Vec<u64> = v.split(',').map(|s| num(what, "snapshots", s.to_string())).collect::<Result<_, _>>()?;
                    // A timeline keeps at most MAX_SNAPSHOTS: more is a damaged list.
                    if steps.len() > crate::timeline::MAX_SNAPSHOTS {
                        return Err(format!("{what}: the saved run is damaged ({} kept steps listed; a run keeps at most {})", steps.len(), crate::timeline::MAX_SNAPSHOTS));
                    }
                    steps
                }
            },
            stored_bytes: 0,
            history_bytes: 0,
            problem: None,
        }
        .with_bytes(&meta, bytes.len(), what)
    }

    /// Its byte counts as stored (bounded), or for a record saved before they were counted,
    /// estimated from its network and its kept steps (`len`: the record's own bytes).
    fn with_bytes(mut self, meta: &HashMap<String, String>, len: usize, what: &str) -> Result<SavedRun, String> {
        let read = |k: &str| -> Result<Option<u64>, String> { meta.get(k).map(|v| v.parse::<u64>().map_err(|_| format!("{what}: '{k}' is not a number: {v}"))).transpose() };
        match (read("stored_bytes")?, read("history_bytes")?) {
            (Some(all), Some(history)) => (self.stored_bytes, self.history_bytes) = (all.min(MAX_STORED_BYTES), history.min(MAX_STORED_BYTES)),
            _ => {
                let weights = crate::model::Layout::new(crate::recipe::Settings::from_query(&self.query).0.hyper.net).total as u64 * 4;
                self.history_bytes = self.snapshots.len() as u64 * weights;
                self.stored_bytes = self.history_bytes + 2 * weights + len as u64;
            }
        }
        Ok(self)
    }

    /// Count its bytes in the browser (`stored_bytes`, `history_bytes`) from what it holds:
    /// its summary (in its record and again in its state's), the training state, and
    /// `weights` floats for each kept step.
    /// `state` is its training state where `checkpoint` is None.
    pub fn count_bytes(&mut self, weights: usize, state: Option<&Checkpoint>) {
        self.history_bytes = (self.snapshots.len() * weights * 4) as u64;
        let state = state.or(self.checkpoint.as_ref()).map_or(0, |c| (c.params.len() + c.momentum.len() + c.order.len()) * 4 + 200);
        self.stored_bytes = 2 * self.to_bytes(false).len() as u64 + state as u64 + self.history_bytes;
    }

    /// A short name of its recipe for legends and the run list: "b4 lr 0.001 cosine flip,crop"
    /// ("wide b32 ..." for the wider network).
    pub fn label(&self) -> String {
        let (s, _) = crate::recipe::Settings::from_query(&self.query);
        let h = &s.hyper;
        let mut l = format!("b{} lr {}", h.batch, h.lr);
        if h.net != crate::model::Arch::LENET {
            l = format!("{} {l}", h.net.name());
        }
        if h.weight_decay > 0.0 {
            l += &format!(" wd {}", h.weight_decay);
        }
        if h.schedule != crate::recipe::Schedule::Constant {
            l += &format!(" {}", h.schedule);
        }
        if h.flip || h.crop {
            l += &format!(" {}", crate::recipe::augment_name(h.flip, h.crop));
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> SavedRun {
        let mut rng = Rng::new(7);
        rng.next_u64();
        SavedRun {
            id: "run-1764420000000".into(),
            query: "?batch=8&lr=0.01&momentum=0.9&weight-decay=0&epochs=3&seed=2&data=sample&schedule=cosine".into(),
            dataset: "sample: 2000 training records".into(),
            started_ms: 1764420000000.0,
            saved_ms: 1764420012345.5,
            epochs: 3,
            curves: Curves { loss: vec![(0.1, 2.3), (0.2, 2.1)], train_accuracy: vec![(0.1, 0.1), (0.2, 0.15)], test_accuracy: vec![] },
            checkpoint: Some(Checkpoint {
                params: vec![0.5, -1.25, 3.0],
                momentum: vec![0.0, 1e-3, -2e-3],
                epoch: 2,
                epoch_step: 17,
                global_step: 267,
                order: vec![2, 0, 1],
                rng,
                images: 2136,
                seconds: 1.75,
            }),
            at: (2, 17, 267),
            done: false,
            snapshots: vec![0, 120, 240],
            stored_bytes: 1 << 20,
            history_bytes: 3 << 18,
            problem: None,
        }
    }

    /// Old runs' timelines go, least recently saved first, until all fit; the current run's
    /// and every run's state stay; a budget already met drops nothing.
    #[test]
    fn the_oldest_timelines_go_first_until_the_rest_fit() {
        let mb = 1u64 << 20;
        let r = |id: &str, saved_ms: f64, history: u64| SavedRun { id: id.into(), saved_ms, history_bytes: history * mb, ..run() };
        let runs = [r("a", 3.0, 40), r("b", 1.0, 30), r("c", 2.0, 0), r("now", 0.5, 50), r("d", 4.0, 10)];
        let current = |r: &SavedRun| r.id == "now";
        // 130 MiB in all: to fit 60, b (oldest) then a go; c has none; the current stays.
        assert_eq!(histories_to_drop(&runs, 60 * mb, &current), ["b", "a"]);
        assert_eq!(histories_to_drop(&runs, 130 * mb, &current), Vec::<String>::new());
        // Only the current run's own is left past the budget: nothing more can go.
        assert_eq!(histories_to_drop(&runs, 0, &current), ["b", "a", "d"]);
        // A run kept (saved lately, perhaps in another tab) is passed over: the next goes.
        assert_eq!(histories_to_drop(&runs, 60 * mb, &|r: &SavedRun| current(r) || r.id == "b"), ["a", "d"]);
        assert_eq!(history_budget(Some(400.0 * mb as f64)), 100 * mb);
        assert_eq!(history_budget(Some(1e13)), 512 * mb);
        assert_eq!(history_budget(None), 512 * mb);
        assert_eq!(history_budget(Some(f64::NAN)), 512 * mb);
        // What a run is counted to hold is what its records take, within a few bytes.
        let mut big = run();
        big.checkpoint.as_mut().unwrap().params = vec![0.5; 62006];
        big.checkpoint.as_mut().unwrap().momentum = vec![0.0; 62006];
        big.count_bytes(62006, None);
        let held = (big.to_bytes(false).len() + big.to_bytes(true).len() + 3 * 62006 * 4) as u64;
        println!("a LeNet run with 3 kept steps: counted {} bytes, its records take {held}", big.stored_bytes);
        assert_eq!(big.history_bytes, 3 * 62006 * 4);
        assert!(big.stored_bytes.abs_diff(held) < 400, "counted {} for {held}", big.stored_bytes);
    }

    #[test]
    fn a_saved_run_round_trips_and_continues_the_same_shuffle() {
        let r = run();
        let back = SavedRun::from_bytes(&r.to_bytes(true), "saved run").unwrap();
        let (a, b) = (r.checkpoint.clone().unwrap(), back.checkpoint.clone().unwrap());
        assert_eq!((back.id.as_str(), back.query.as_str(), back.dataset.as_str()), (r.id.as_str(), r.query.as_str(), r.dataset.as_str()));
        assert_eq!((back.started_ms, back.saved_ms, back.epochs, back.at, back.done), (r.started_ms, r.saved_ms, r.epochs, r.at, r.done));
        assert_eq!((back.curves.loss.clone(), back.curves.train_accuracy.clone(), back.curves.test_accuracy.len()), (r.curves.loss.clone(), r.curves.train_accuracy.clone(), 0));
        assert_eq!(
            (b.params, b.momentum, b.order, b.epoch, b.epoch_step, b.global_step, b.images, b.seconds),
            (a.params, a.momentum, a.order, a.epoch, a.epoch_step, a.global_step, a.images, a.seconds)
        );
        let (mut x, mut y) = (a.rng, b.rng);
        assert_eq!(x.permutation(50), y.permutation(50), "the shuffle stream continues where it was");
        assert_eq!(back.label(), "b8 lr 0.01 cosine");
        assert_eq!(back.snapshots, vec![0, 120, 240], "the timeline's steps");
        assert_eq!(SavedRun::from_bytes(&r.to_bytes(false), "summary").unwrap().snapshots, vec![0, 120, 240], "in the summary too");
        // The summary has no training state but the same position and curves.
        let s = SavedRun::from_bytes(&r.to_bytes(false), "summary").unwrap();
        assert!(s.checkpoint.is_none());
        assert_eq!((s.at, s.curves.loss.len()), (r.at, 2));
        assert!(r.to_bytes(false).len() < 2000);
    }

    #[test]
    fn a_damaged_entry_is_refused_by_name() {
        let b = run().to_bytes(true);
        assert!(SavedRun::from_bytes(&b[..b.len() / 2], "run-1").unwrap_err().starts_with("run-1: not a saved run"));
        let model = crate::checkpoint::to_safetensors(&crate::model::init_params(&crate::model::Layout::lenet(), 0), &crate::model::Layout::lenet());
        let e = SavedRun::from_bytes(&model, "model.safetensors").unwrap_err();
        assert!(e.contains("not a tabcnn saved run"), "{e}");
        let mut r = run();
        r.checkpoint.as_mut().unwrap().params[1] = f32::NAN;
        assert!(SavedRun::from_bytes(&r.to_bytes(true), "run-2").unwrap_err().contains("damaged"));
    }

    #[test]
    fn stored_numbers_are_bounded_and_an_unreadable_record_is_listed_by_its_key() {
        let bad = |f: &dyn Fn(&mut SavedRun)| {
            let mut r = run();
            f(&mut r);
            SavedRun::from_bytes(&r.to_bytes(false), "run-9").unwrap_err()
        };
        let e = bad(&|r| r.epochs = 1_000_000_000_000);
        println!("{e}");
        assert!(e.contains("run-9: the saved run is damaged (epoch 2 of 1000000000000, step 17; a run has 1 to 1000 epochs)"), "{e}");
        assert!(bad(&|r| r.at.0 = 0).contains("damaged"));
        assert!(bad(&|r| r.at.0 = r.epochs + 1).contains("damaged"));
        let e = bad(&|r| r.snapshots = (0..1000).collect());
        assert!(e.contains("1000 kept steps listed; a run keeps at most 32"), "{e}");
        // A huge stored curve comes back bounded.
        let mut r = run();
        r.curves.loss = (0..20_000).map(|i| (i as f64, 1.0)).collect();
        assert!(SavedRun::from_bytes(&r.to_bytes(false), "run-1764420000000").unwrap().curves.loss.len() <= crate::app::MAX_CURVE_POINTS);
        // Listed by the key it is stored under, with why it cannot be used.
        let good = run();
        assert_eq!(SavedRun::from_stored("run-1764420000000", &good.to_bytes(false)).problem, None);
        let moved = SavedRun::from_stored("run-7", &good.to_bytes(false));
        assert_eq!((moved.id.as_str(), moved.problem.as_deref()), ("run-7", Some("run-7: the record names itself run-1764420000000, not its key (damaged)")));
        let junk = SavedRun::from_stored("run-8", b"not a run");
        assert!(junk.id == "run-8" && junk.problem.as_deref().unwrap().starts_with("run-8: not a saved run"), "{junk:?}");
        // Byte counts: as stored, bounded, or estimated for a record saved before they were.
        let back = SavedRun::from_bytes(&good.to_bytes(false), "x").unwrap();
        assert_eq!((back.stored_bytes, back.history_bytes), (good.stored_bytes, good.history_bytes));
        let huge = SavedRun { stored_bytes: u64::MAX, ..run() };
        assert_eq!(SavedRun::from_bytes(&huge.to_bytes(false), "x").unwrap().stored_bytes, MAX_STORED_BYTES);
        let b = good.to_bytes(false);
        let (_, header) = SafeTensors::read_metadata(&b).unwrap();
        let st = SafeTensors::deserialize(&b).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        meta.remove("stored_bytes");
        meta.remove("history_bytes");
        let old = safetensors::serialize(st.tensors().into_iter().collect::<BTreeMap<_, _>>(), Some(meta)).unwrap();
        let r = SavedRun::from_bytes(&old, "old").unwrap();
        // Its query names no network: LeNet's packed weights, 3 kept steps.
        let weights = crate::model::Layout::lenet().total as u64 * 4;
        assert_eq!((r.history_bytes, r.stored_bytes), (3 * weights, 5 * weights + old.len() as u64));
    }

    #[test]
    fn kept_weights_round_trip_and_damaged_ones_are_refused() {
        let w = vec![0.5f32, -1.0, 3.25];
        assert_eq!(snapshot_key("run-7", 120), "run-7@120");
        assert_eq!(snapshot_from_bytes(&snapshot_bytes(&w), 3, "k").unwrap(), w);
        assert!(snapshot_from_bytes(&snapshot_bytes(&w)[..11], 3, "run-7@120").unwrap_err().contains("run-7@120: 11 bytes, the network's weights take 12"));
        assert!(snapshot_from_bytes(&snapshot_bytes(&[1.0, f32::NAN, 0.0]), 3, "k").unwrap_err().contains("not finite"));
        // A run saved before timelines has none.
        let mut r = run();
        r.snapshots.clear();
        assert!(SavedRun::from_bytes(&r.to_bytes(true), "old").unwrap().snapshots.is_empty());
    }
}
