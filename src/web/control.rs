//! The controls (main thread): Start, Pause, Evaluate, Reset, the recipe's fields, the
//! presets, the dataset select and the archive drop. Each is checked here with the one
//! validator (`Settings::set`), shown at once (the link, the note), and sent to the worker.

use crate::dom::{control_value, el, on, on_file, set_attr, set_control, set_text, show_error};
use crate::ui::{send, send_with, Ui};
use tabcnn::recipe::{DatasetChoice, Settings};
use tabcnn::wire::ToWorker;
use wasm_bindgen::JsCast;
use web_sys::HtmlSelectElement;

/// The hyperparameter controls: each id is its settings key.
const FIELDS: [&str; 9] = ["epochs", "batch", "lr", "momentum", "weight-decay", "seed", "augment", "schedule", "net"];
/// The settings that apply when a run starts (Reset, or the first Start), not to a running one.
const AT_START: [&str; 5] = ["batch", "seed", "augment", "schedule", "net"];

/// The presets: (name, link query applied on top of the recipe). The last two train on the
/// full CIFAR-10.
const PRESETS: [(&str, &str); 3] = [
    ("recipe", ""),
    // README "Past the recipe": 69.91 % in 20 epochs (seed 0, CPU engine, 370 s).
    ("beyond", "batch=32&lr=0.02&weight-decay=5e-4&schedule=cosine&augment=flip,crop&epochs=20"),
    // README "Past the recipe": the wider network, 30 epochs.
    ("wide", "batch=32&lr=0.02&weight-decay=5e-4&schedule=cosine&augment=flip,crop&epochs=30&net=wide"),
];

/// The page trains LeNet-shaped networks so far: any other network (a link's, the net field's)
/// is refused with where it trains, and the settings keep LeNet's widths.
pub(crate) fn lenet_only(s: &mut Settings) -> Result<(), String> {
    let h = &mut s.hyper;
    if let Some(text) = h.layers.take() {
        return Err(format!(
            "net: the page trains LeNet-shaped networks so far; this one trains with `tabcnn train --net '{text}'` (the CPU and GPU engines), and `tabcnn net` shows its shapes and PyTorch program"
        ));
    }
    if h.beyond_lenet_engines() {
        (h.label_smoothing, h.nesterov, h.lr_groups, h.optimizer) = (0.0, false, [1.0; 3], tabcnn::recipe::Optimizer::Sgd);
        if let tabcnn::recipe::Schedule::Warmup { .. } = h.schedule {
            h.schedule = tabcnn::recipe::Schedule::Constant;
        }
        return Err("label-smoothing, nesterov, lr-groups, optimizer=adamw and schedule=warmup: the page's engines train without them so far; `tabcnn train --label-smoothing S --nesterov --lr-groups W,B,N --optimizer adamw --schedule warmup:W:S:E` trains with them".into());
    }
    Ok(())
}

fn field_value(s: &Settings, key: &str) -> String {
    let h = &s.hyper;
    match key {
        "epochs" => h.epochs.to_string(),
        "batch" => h.batch.to_string(),
        "lr" => h.lr.to_string(),
        "momentum" => h.momentum.to_string(),
        "weight-decay" => h.weight_decay.to_string(),
        "seed" => h.seed.to_string(),
        "augment" => tabcnn::recipe::augment_name(h.flip, h.crop).to_string(),
        "schedule" => h.schedule.to_string(),
        "net" => h.net.name(),
        _ => unreachable!(),
    }
}

/// The controls and the link show `s` (a dropped archive leaves the dataset select as it is).
pub(crate) fn show_settings(s: &Settings) {
    for key in FIELDS {
        set_control(key, &field_value(s, key));
    }
    if s.dataset != DatasetChoice::File {
        let sel: HtmlSelectElement = el("dataset").dyn_into().expect("select");
        sel.set_value(s.dataset.name());
    }
    set_attr(&el("share"), "href", &s.to_query());
    show_view(s.projector);
}

/// The projector layout (one 1920x1080 screen: curves, grid, confusion matrix, the network;
/// www/style.css `body.projector`) or the long page.
fn show_view(projector: bool) {
    if let Some(body) = crate::dom::doc().body() {
        body.set_class_name(if projector { "projector" } else { "" });
    }
    el("projector").set_text_content(Some(if projector { "Whole page" } else { "Projector view" }));
}

fn click(ui: &Ui, id: &str, msg: ToWorker) {
    let u = ui.clone();
    on(id, "click", move |_| send(&u, msg.clone()));
}

/// Pause and Reset: the worker answers between steps, so while it trains steps that take long
/// the page says at once that it will, and when (#note).
fn click_between_steps(ui: &Ui, id: &str, msg: ToWorker, action: &'static str) {
    let u = ui.clone();
    on(id, "click", move |_| {
        let note = {
            let p = u.borrow();
            let batch = if p.panel.batch > 0 { p.panel.batch } else { p.settings.hyper.batch };
            (p.state == tabcnn::wire::RunState::Training).then(|| tabcnn::views::control_wait_note(action, batch, p.images_per_second)).flatten()
        };
        if let Some(n) = note {
            set_text("note", &n);
            // Cleared when the run stops training (src/web/page.rs, show_status).
            u.borrow_mut().wait_note = true;
        }
        send(&u, msg.clone());
    });
}

pub(crate) fn wire(ui: &Ui) {
    click(ui, "start", ToWorker::Start);
    click_between_steps(ui, "pause", ToWorker::Pause, "pausing");
    click(ui, "evaluate", ToWorker::Evaluate);
    click_between_steps(ui, "reset", ToWorker::Reset, "resetting");
    let u = ui.clone();
    on("projector", "click", move |_| {
        let mut p = u.borrow_mut();
        p.settings.projector = !p.settings.projector;
        show_view(p.settings.projector);
        set_attr(&el("share"), "href", &p.settings.to_query());
    });
    for key in FIELDS {
        let u = ui.clone();
        on(key, "change", move |_| {
            let v = control_value(key);
            let mut p = u.borrow_mut();
            let before = p.settings.clone();
            match p.settings.set(key, &v).and_then(|()| lenet_only(&mut p.settings)) {
                Ok(()) => {
                    show_error("");
                    if AT_START.contains(&key) {
                        set_text("note", &format!("{key} applies from the next Reset (or the first Start)"));
                    }
                    set_control("preset", "");
                }
                Err(e) => {
                    show_error(&e);
                    p.settings = before;
                    set_control(key, &field_value(&p.settings, key));
                }
            }
            set_attr(&el("share"), "href", &p.settings.to_query());
            let settings = p.settings.clone();
            drop(p);
            send(&u, ToWorker::Settings { settings });
        });
    }
    let u = ui.clone();
    on("dataset", "change", move |_| choose_dataset(&u, control_value("dataset") == "full"));
    let u = ui.clone();
    on("preset", "change", move |_| {
        let name = control_value("preset");
        let Some(&(_, query)) = PRESETS.iter().find(|(n, _)| *n == name) else { return };
        let (settings, full) = {
            let mut p = u.borrow_mut();
            let (mut s, _) = Settings::from_query(query);
            // The preset sets the recipe's knobs; the dataset, engine and limit stay.
            (s.dataset, s.engine, s.limit, s.autostart, s.projector) = (p.settings.dataset, p.settings.engine, p.settings.limit, false, p.settings.projector);
            if name != "recipe" {
                s.dataset = DatasetChoice::Full;
            }
            let full = s.dataset == DatasetChoice::Full && p.settings.dataset != DatasetChoice::Full;
            p.settings = s;
            show_settings(&p.settings);
            set_control("preset", &name);
            (p.settings.clone(), full)
        };
        set_text("note", "the preset applies from the next Reset (or the first Start)");
        send(&u, ToWorker::Settings { settings });
        if full {
            set_control("dataset", "full");
            choose_dataset(&u, true);
        }
    });
    let u = ui.clone();
    on_file("file", "drop", move |f| {
        let (name, size) = (f.name(), f.size());
        send_with(&u, ToWorker::DatasetFile { name, size }, Some(f.into()));
    });
}

/// Switch to the sample or the full dataset (the worker loads it if needed).
fn choose_dataset(ui: &Ui, full: bool) {
    let mut p = ui.borrow_mut();
    p.settings.dataset = if full { DatasetChoice::Full } else { DatasetChoice::Sample };
    set_attr(&el("share"), "href", &p.settings.to_query());
    drop(p);
    send(ui, ToWorker::Dataset { full });
}
