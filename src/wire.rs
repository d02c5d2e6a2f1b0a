//! The page's two threads and what they say to each other. The main thread keeps the DOM, the
//! controls and the drawing; a dedicated worker owns the run (dataset, engines, session,
//! evaluations, saves, inspection). They talk in two enums: `ToWorker` (what the visitor asked
//! for) and `FromWorker` (what the run did, to show). Each message is serialised once, as
//! MessagePack, by `encode`: every float arrives as it left, NaN and infinity included (a
//! diverged loss, an overflowed probability are shown as what they are; JSON would turn them
//! into null and lose the message). Its large arrays (weights, activations, images, files) do
//! not go into that buffer: fields marked `#[serde(with = "crate::wire::bulk")]` are set aside as
//! `Bulk` buffers, which the page moves between the threads as transferables, and the message
//! holds their index. `decode` puts them back. Browser-free, so the round trips (and a fuzzer)
//! are tested natively.

use crate::app::Curves;
use crate::model::{Arch, CLASSES};
use crate::outputs::{EvalResult, Inside, Looks};
use crate::recipe::Settings;
use crate::saved::SavedRun;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

/// What the visitor asked for: the main thread's controls, sent to the worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// The first message, once the worker is ready: the settings the link gave, and the page's
    /// own address (the worker's is a blob: URL, so the page's files are fetched from this).
    Begin {
        settings: Settings,
        base: String,
    },
    Start,
    /// Pause a training run, or go on with a paused one.
    Pause,
    Evaluate,
    Reset,
    /// A control changed the settings (all of them are sent): lr, momentum, weight decay and
    /// epochs apply to the running session, the rest from the next run.
    Settings {
        settings: Settings,
    },
    /// Load the sample (false) or the full CIFAR-10 from the page's server (true).
    Dataset {
        full: bool,
    },
    /// An archive dropped on the page or picked: the File object travels beside the message
    /// (the worker reads and decompresses it), so only its name and size are here.
    DatasetFile {
        name: String,
        size: f64,
    },
    /// Follow this test record through the network (a click on the prediction grid).
    Pick {
        record: u32,
    },
    /// Show the views of a kept step of the timeline (None: live, following training).
    Scrub {
        step: Option<u64>,
    },
    /// Show where the network looks for this class (None: the predicted one).
    LooksClass {
        class: Option<usize>,
    },
    /// List the images of a confusion cell (true, predicted).
    Cell {
        truth: usize,
        pred: usize,
    },
    /// The visitor's picture, decoded to a CIFAR record [3,32,32] on the main thread.
    Own {
        source: String,
        #[serde(with = "bulk")]
        record: Vec<u8>,
    },
    /// A model file the visitor uploaded (checked and parsed by the worker).
    Upload {
        name: String,
        #[serde(with = "bulk")]
        bytes: Vec<u8>,
    },
    Download,
    ResumeRun {
        id: String,
    },
    DeleteRun {
        id: String,
    },
}

/// Where a run is: the `data-state` of #metrics and the first word of its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunState {
    Idle,
    Loading,
    Training,
    Paused,
    Done,
    Error,
}

impl RunState {
    pub fn name(self) -> &'static str {
        match self {
            RunState::Idle => "idle",
            RunState::Loading => "loading",
            RunState::Training => "training",
            RunState::Paused => "paused",
            RunState::Done => "done",
            RunState::Error => "error",
        }
    }
}

/// The run's figures as #metrics and the progress bar show them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub state: RunState,
    /// 1-based epoch, step within it, steps since the start.
    pub epoch: usize,
    pub epoch_step: usize,
    pub step: u64,
    pub images_per_second: f64,
    pub loss: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
    /// Points of the loss curve so far (a resumed run brings its curve back).
    pub loss_points: usize,
    /// Of the whole run, 0..=1, and the progress bar's words.
    pub progress: f64,
    pub label: String,
}

/// What the run trains on, and why: the page's engine panel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EnginePanel {
    /// "gpu" or "cpu": the engine training now (#metrics data-engine).
    pub engine: String,
    /// The WebGPU adapter's name ("cpu" on the CPU engine, as data-adapter).
    pub adapter: String,
    /// The WebGPU adapter is a software renderer (SwiftShader, WARP, lavapipe).
    pub software: bool,
    /// The sentence the page shows: what trains, and why.
    pub text: String,
    /// Images/s each engine reached when both were measured at this batch size (auto).
    pub measured_gpu: Option<f64>,
    pub measured_cpu: Option<f64>,
    pub batch: usize,
    /// The GPU engine's step: compute dispatches and passes per training step.
    pub dispatches: Option<usize>,
    pub passes: Option<usize>,
    /// GPU time per training step from timestamp queries, where the browser has them.
    pub gpu_ms_per_step: Option<f64>,
    /// Why the GPU time is missing (no timestamp queries, or not measured).
    pub gpu_ms_why: String,
    /// The CPU engine's threads in this tab (1 + its helper workers).
    pub cpu_threads: usize,
    /// Why the CPU engine has one thread only, where it has (no cross-origin isolation, one
    /// core, a helper that failed).
    pub cpu_threads_why: String,
    /// Helper workers that stopped answering and were replaced by fresh ones, and why the last
    /// one was.
    #[serde(default)]
    pub helpers_replaced: usize,
    #[serde(default)]
    pub helpers_replaced_why: String,
}

/// Where the worker's time went since the page opened, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Shares {
    pub train_ms: f64,
    pub eval_ms: f64,
    pub view_ms: f64,
    pub save_ms: f64,
    /// Since the worker started.
    pub wall_ms: f64,
    /// The worker's wasm memory now (it only grows: its peak), in bytes.
    #[serde(default)]
    pub heap_bytes: f64,
}

/// What the run did: the worker's messages to the main thread, which shows them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
// A message is built, written out and dropped: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum FromWorker {
    /// The worker's app is installed: the page may send `Begin`.
    Ready,
    Engine {
        panel: EnginePanel,
    },
    Status {
        status: Status,
    },
    /// The worker changed the settings (an uploaded model's network, a resumed run's, the
    /// dataset in use): the controls and the link show them.
    Settings {
        settings: Settings,
    },
    Note {
        text: String,
    },
    /// An error for the visitor (empty: none any more).
    Error {
        text: String,
    },
    ModelStatus {
        text: String,
    },
    DataProgress {
        label: String,
        fraction: f64,
    },
    /// A dataset is in use: its description and class names.
    Data {
        description: String,
        classes: Vec<String>,
        test_len: usize,
    },
    /// The curves (`append`: points to add to those shown; else all of them), the epochs
    /// the x axis spans, and the steps of an epoch (0 when no run is under way).
    Curves {
        curves: Curves,
        epochs: usize,
        steps_per_epoch: usize,
        append: bool,
    },
    /// The prediction grid: its test records, their images [n,3,32,32] and labels, and the
    /// probabilities the current weights give them (None before any prediction).
    Grid {
        records: Vec<u32>,
        #[serde(with = "bulk")]
        images: Vec<u8>,
        labels: Vec<u8>,
        probs: Option<Vec<[f32; CLASSES]>>,
    },
    /// The last whole-test-set evaluation (None: the run has none yet).
    Eval {
        eval: Option<EvalResult>,
    },
    /// A confusion cell: all its records, and the first ones' images and probabilities.
    Cell {
        truth: usize,
        pred: usize,
        records: Vec<u32>,
        #[serde(with = "bulk")]
        images: Vec<u8>,
        probs: Vec<[f32; CLASSES]>,
    },
    /// The weights the filter view draws, and what they are ("weights of step 120").
    Filters {
        arch: Arch,
        #[serde(with = "bulk")]
        params: Vec<f32>,
        what: String,
    },
    /// A test image followed through the network.
    Features {
        record: u32,
        step: u64,
        arch: Arch,
        #[serde(with = "bulk")]
        image: Vec<u8>,
        inside: Inside,
        /// The weights of `step` [Layout::total], for the convolution view's arithmetic.
        #[serde(with = "bulk")]
        params: Vec<f32>,
        truth: String,
        title: String,
    },
    /// Where the network looks (saliency, Grad-CAM) in the followed test image or the
    /// visitor's picture (`own`), named `what`, at `step`, computed by `source`.
    Looks {
        what: String,
        own: bool,
        step: u64,
        #[serde(with = "bulk")]
        image: Vec<u8>,
        looks: Looks,
        source: String,
    },
    /// The steps whose weights the run keeps (the timeline), an epoch's steps, and the one the
    /// views show (None: live).
    Timeline {
        steps: Vec<u64>,
        steps_per_epoch: usize,
        shown: Option<u64>,
    },
    /// Each layer's weight and gradient norms and histograms at `step` (`epochs` done).
    Stats {
        step: u64,
        epochs: f64,
        layers: Vec<crate::stats::LayerStats>,
    },
    /// The visitor's picture through the network with the weights of `step`.
    Own {
        source: String,
        #[serde(with = "bulk")]
        record: Vec<u8>,
        probs: [f32; CLASSES],
        step: u64,
    },
    /// The saved-runs line (#runs-status), and a save that landed (`saved`: run id and step).
    RunsStatus {
        text: String,
        saved: Option<(String, u64)>,
    },
    /// The saved runs, newest first, without their training state; and the current run's id.
    Runs {
        runs: Vec<SavedRun>,
        current: Option<String>,
    },
    /// One saved run's summary changed (a save landed): it replaces the page's copy (or is
    /// added first), instead of every run's curves sent again each autosave.
    RunSaved {
        run: SavedRun,
        current: Option<String>,
    },
    /// What the browser says the page's storage uses and may use, in bytes (after a save;
    /// None where it says nothing).
    Storage {
        usage: Option<(f64, f64)>,
    },
    /// Offer to resume an unfinished run: (its id, the sentence); None hides the offer.
    ResumeOffer {
        offer: Option<(String, String)>,
    },
    /// A model file to download, and the sentence that says what it is.
    Download {
        name: String,
        #[serde(with = "bulk")]
        bytes: Vec<u8>,
        text: String,
    },
    Shares {
        shares: Shares,
    },
    /// The worker panicked (a bug): the page says so.
    Panic {
        text: String,
    },
}

/// A large array set aside from a message's JSON.
#[derive(Clone, Debug, PartialEq)]
pub enum Bulk {
    F32(Vec<f32>),
    U8(Vec<u8>),
    U32(Vec<u32>),
}

impl Bulk {
    pub fn len(&self) -> usize {
        match self {
            Bulk::F32(v) => v.len(),
            Bulk::U8(v) => v.len(),
            Bulk::U32(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The element types a `Bulk` holds.
pub trait BulkItem: Sized + Clone + Serialize + DeserializeOwned {
    const NAME: &'static str;
    fn wrap(v: Vec<Self>) -> Bulk;
    fn unwrap(b: Bulk) -> Option<Vec<Self>>;
}

macro_rules! bulk_item {
    ($t:ty, $variant:ident, $name:literal) => {
        impl BulkItem for $t {
            const NAME: &'static str = $name;
            fn wrap(v: Vec<Self>) -> Bulk {
                Bulk::$variant(v)
            }
            fn unwrap(b: Bulk) -> Option<Vec<Self>> {
                match b {
                    Bulk::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
bulk_item!(f32, F32, "f32");
bulk_item!(u8, U8, "u8");
bulk_item!(u32, U32, "u32");

thread_local! {
    /// While `encode` runs: the buffers set aside so far.
    static OUT: RefCell<Option<Vec<Bulk>>> = const { RefCell::new(None) };
    /// While `decode` runs: the buffers that came with the message (taken as they are used).
    static IN: RefCell<Option<Vec<Option<Bulk>>>> = const { RefCell::new(None) };
}

/// `#[serde(with = "crate::wire::bulk")]` on a `Vec<f32>`, `Vec<u8>` or `Vec<u32>`: inside
/// `encode`/`decode` the array travels beside the message (`{"bulk": index}` in it);
/// elsewhere it is written inline as a list.
pub mod bulk {
    use super::{BulkItem, IN, OUT};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr<T> {
        Bulk { bulk: usize },
        Inline(Vec<T>),
    }

    pub fn serialize<T: BulkItem, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        let index = OUT.with(|o| {
            o.borrow_mut().as_mut().map(|list| {
                list.push(T::wrap(v.to_vec()));
                list.len() - 1
            })
        });
        match index {
            Some(bulk) => Repr::<T>::Bulk { bulk }.serialize(s),
            None => v.serialize(s),
        }
    }

    pub fn deserialize<'de, T: BulkItem, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        match Repr::<T>::deserialize(d)? {
            Repr::Inline(v) => Ok(v),
            Repr::Bulk { bulk } => {
                let taken = IN.with(|i| i.borrow_mut().as_mut().and_then(|list| list.get_mut(bulk).and_then(Option::take)));
                let b = taken.ok_or_else(|| serde::de::Error::custom(format!("the message names buffer {bulk}, which did not come with it")))?;
                T::unwrap(b).ok_or_else(|| serde::de::Error::custom(format!("buffer {bulk} is not of {}", T::NAME)))
            }
        }
    }
}

/// A message as one MessagePack buffer (maps with field names, so a message names what it
/// holds) and the large arrays set aside from it, in the order the message numbers them.
pub fn encode<T: Serialize>(msg: &T) -> Result<(Vec<u8>, Vec<Bulk>), String> {
    OUT.with(|o| *o.borrow_mut() = Some(Vec::new()));
    let packed = rmp_serde::to_vec_named(msg);
    let bulk = OUT.with(|o| o.borrow_mut().take()).unwrap_or_default();
    packed.map(|m| (m, bulk)).map_err(|e| format!("a message could not be written: {e}"))
}

/// The message `encode` wrote, with its arrays put back. Bytes that are not such a message, or
/// buffers that do not match it, are an error that names what is wrong.
pub fn decode<T: DeserializeOwned>(packed: &[u8], bulk: Vec<Bulk>) -> Result<T, String> {
    IN.with(|i| *i.borrow_mut() = Some(bulk.into_iter().map(Some).collect()));
    let msg = rmp_serde::from_slice(packed);
    IN.with(|i| *i.borrow_mut() = None);
    msg.map_err(|e| format!("a message between the page's threads could not be read ({e}; {} bytes)", packed.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{init_params, Layout};

    fn inside() -> Inside {
        let v = |n: usize, k: f32| (0..n).map(|i| i as f32 * k).collect::<Vec<f32>>();
        Inside { x: v(3072, 0.5), h1: v(4704, 0.25), p1: v(1176, 1.5), h2: v(1600, -1.0), p2: v(400, 2.0), a1: v(120, 3.0), a2: v(84, 0.125), logits: v(10, -0.5) }
    }

    #[test]
    fn large_arrays_travel_beside_the_text() {
        let params = init_params(&Layout::new(Arch::LENET), 3);
        let msg = FromWorker::Filters { arch: Arch::LENET, params: params.clone(), what: "weights of step 7".into() };
        let (packed, bulk) = encode(&msg).unwrap();
        println!("filters: a message of {} bytes, {} buffer(s) of {} values", packed.len(), bulk.len(), bulk[0].len());
        assert!(packed.len() < 200, "the weights are not in the message: {} bytes", packed.len());
        assert_eq!(bulk, vec![Bulk::F32(params)]);
        assert_eq!(decode::<FromWorker>(&packed, bulk).unwrap(), msg);
    }

    #[test]
    fn every_array_of_a_message_is_set_aside_in_order() {
        let msg =
            FromWorker::Features { record: 5, step: 9, arch: Arch::LENET, image: vec![7; 3072], inside: inside(), params: vec![0.5; 70], truth: "cat".into(), title: "t".into() };
        let (packed, bulk) = encode(&msg).unwrap();
        assert_eq!(bulk.len(), 10, "the image, the eight activations and the weights");
        assert_eq!(bulk[0], Bulk::U8(vec![7; 3072]));
        assert!(packed.len() < 600, "{} bytes", packed.len());
        assert_eq!(decode::<FromWorker>(&packed, bulk).unwrap(), msg);
        let ev = FromWorker::Eval { eval: Some(EvalResult::from_preds(vec![1, 2, 3, 1], &[1, 2, 0, 1])) };
        let (packed, bulk) = encode(&ev).unwrap();
        assert_eq!(bulk, vec![Bulk::U32(vec![1, 2, 3, 1])]);
        assert_eq!(decode::<FromWorker>(&packed, bulk).unwrap(), ev);
    }

    /// The message's bits: its encoding, and its buffers' bit patterns (NaN != NaN, so a
    /// message that carries one cannot be compared with ==).
    fn bits<T: Serialize>(msg: &T) -> (Vec<u8>, Vec<Vec<u32>>) {
        let (packed, bulk) = encode(msg).unwrap();
        let words = bulk
            .into_iter()
            .map(|b| match b {
                Bulk::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
                Bulk::U8(v) => v.iter().map(|&x| x as u32).collect(),
                Bulk::U32(v) => v,
            })
            .collect();
        (packed, words)
    }

    #[test]
    fn numbers_that_are_not_finite_arrive_as_they_left() {
        let odd = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, f32::MIN_POSITIVE / 2.0, 1e38];
        let probs = |k: usize| std::array::from_fn::<f32, CLASSES, _>(|c| odd[(c + k) % odd.len()]);
        let hist = crate::stats::Histogram { range: f32::INFINITY, counts: vec![1, 2] };
        let layer = crate::stats::LayerStats { name: "fc3".into(), weight_norm: f32::INFINITY, grad_norm: f32::NAN, weights: hist.clone(), grads: hist };
        let curves = Curves { loss: vec![(0.5, f64::NAN), (1.0, f64::INFINITY)], train_accuracy: vec![(f64::NAN, 0.1)], test_accuracy: vec![] };
        let status = Status {
            state: RunState::Error,
            epoch: 1,
            epoch_step: 2,
            step: 3,
            images_per_second: f64::INFINITY,
            loss: Some(f64::NAN),
            train_accuracy: Some(f64::NEG_INFINITY),
            test_accuracy: None,
            loss_points: 4,
            progress: f64::NAN,
            label: "diverged".into(),
        };
        let (mut settings, _) = Settings::from_query("?lr=1e30");
        settings.hyper.lr = f32::INFINITY;
        let looks = Looks { class: 3, logits: odd.repeat(2)[..CLASSES].to_vec(), dx: vec![f32::NAN; 3072], h2: vec![f32::INFINITY; 1600], dbias2: vec![f32::NAN; 16] };
        let messages = [
            FromWorker::Grid { records: vec![1, 2], images: vec![0; 6144], labels: vec![3, 4], probs: Some(vec![probs(0), probs(1)]) },
            FromWorker::Cell { truth: 1, pred: 2, records: vec![7], images: vec![1; 3072], probs: vec![probs(2)] },
            FromWorker::Own { source: "cat.png".into(), record: vec![2; 3072], probs: probs(3), step: 9 },
            FromWorker::Stats { step: 9, epochs: f64::NAN, layers: vec![layer] },
            FromWorker::Status { status },
            FromWorker::Curves { curves, epochs: 2, steps_per_epoch: 10, append: true },
            FromWorker::DataProgress { label: "x".into(), fraction: f64::NEG_INFINITY },
            FromWorker::Settings { settings },
            FromWorker::Looks { what: "w".into(), own: false, step: 1, image: vec![0; 3072], looks, source: "cpu".into() },
            FromWorker::Engine { panel: EnginePanel { measured_gpu: Some(f64::NAN), gpu_ms_per_step: Some(f64::INFINITY), ..EnginePanel::default() } },
        ];
        for msg in &messages {
            let (packed, bulk) = encode(msg).unwrap();
            let back: FromWorker = decode(&packed, bulk).unwrap_or_else(|e| panic!("{e}: {msg:?}"));
            assert_eq!(bits(&back), bits(msg), "{msg:?} came back as {back:?}");
        }
        // What arrived is still NaN and infinity, not a stand-in.
        let (packed, bulk) = encode(&messages[0]).unwrap();
        let Ok(FromWorker::Grid { probs: Some(p), .. }) = decode::<FromWorker>(&packed, bulk) else { panic!("a grid") };
        assert!(p[0][0].is_nan() && p[0][1] == f32::INFINITY && p[0][2] == f32::NEG_INFINITY && p[0][3].is_sign_negative());
        println!("{} messages with NaN, +-inf, -0 and subnormals in every float field: each came back bit for bit", messages.len());
    }

    #[test]
    fn controls_round_trip() {
        let (mut settings, _) = Settings::from_query("?batch=32&lr=0.02&schedule=step:3:0.5&augment=flip,crop&net=wide&data=full&limit=400");
        settings.autostart = true;
        for msg in [
            ToWorker::Begin { settings: settings.clone(), base: "http://127.0.0.1:8080/".into() },
            ToWorker::Settings { settings },
            ToWorker::Pause,
            ToWorker::DatasetFile { name: "my-cifar.tar.gz".into(), size: 1e6 },
            ToWorker::Own { source: "cat.png".into(), record: (0..3072).map(|i| i as u8).collect() },
            ToWorker::Cell { truth: 3, pred: 5 },
        ] {
            let (packed, bulk) = encode(&msg).unwrap();
            assert_eq!(decode::<ToWorker>(&packed, bulk).unwrap(), msg, "{packed:?}");
        }
    }

    #[test]
    fn a_message_without_its_buffers_or_with_the_wrong_ones_is_refused() {
        let msg = ToWorker::Upload { name: "m.safetensors".into(), bytes: vec![1, 2, 3] };
        let (packed, _) = encode(&msg).unwrap();
        let e = decode::<ToWorker>(&packed, vec![]).unwrap_err();
        println!("{e}");
        assert!(e.contains("names buffer 0, which did not come with it"), "{e}");
        let e = decode::<ToWorker>(&packed, vec![Bulk::F32(vec![1.0])]).unwrap_err();
        assert!(e.contains("buffer 0 is not of u8"), "{e}");
        let explode = rmp_serde::to_vec_named(&std::collections::BTreeMap::from([("Explode", ())])).unwrap();
        let e = decode::<ToWorker>(&explode, vec![]).unwrap_err();
        assert!(e.contains("could not be read"), "{e}");
        // The thread's tables are left clean: the next message decodes.
        let (packed, bulk) = encode(&msg).unwrap();
        assert_eq!(decode::<ToWorker>(&packed, bulk).unwrap(), msg);
    }

    #[test]
    fn outside_a_message_the_arrays_are_inline() {
        let ev = EvalResult::from_preds(vec![0, 1], &[0, 0]);
        let json = serde_json::to_string(&ev).unwrap();
        assert!(json.contains("\"preds\":[0,1]"), "{json}");
        assert_eq!(serde_json::from_str::<EvalResult>(&json).unwrap(), ev);
    }
}
