//! "Where it looks" (main thread): for the followed test image or the visitor's picture, the
//! saliency map (how much each pixel moves the chosen class's score) and Grad-CAM at conv2
//! (which regions conv2's maps weigh for it), each alone and over the image, for the predicted
//! class or one the visitor picks. The worker's engine computes them (tabcnn::outputs::Looks);
//! this draws them. #looks carries the numbers for scripts.

use crate::dom::{canvas, doc, el, on, set_attr};
use crate::draw::{self, text, GREY, INK};
use crate::ui::{send, Page, Ui};
use tabcnn::outputs::Looks;
use tabcnn::views::{cam_on_input, heat_tile, overlay, rgba_from_record};
use tabcnn::wire::ToWorker;

/// Each panel's scale (a 32x32 picture drawn 128 px wide) and the gap between panels.
const SCALE: f64 = 4.0;
const GAP: f64 = 70.0;

/// The class picker: the predicted class, or any class.
pub(crate) fn wire(ui: &Ui) {
    let u = ui.clone();
    on("looks-class", "change", move |_| {
        let v = crate::dom::control_value("looks-class");
        send(&u, ToWorker::LooksClass { class: v.parse().ok() });
    });
}

/// The picker's options: "the predicted class", then the dataset's classes.
pub(crate) fn fill_classes(classes: &[String]) {
    let sel = el("looks-class");
    sel.set_text_content(None);
    for (value, name) in std::iter::once((String::new(), "the predicted class".to_string())).chain(classes.iter().enumerate().map(|(i, c)| (i.to_string(), c.clone()))) {
        if let Ok(o) = doc().create_element("option") {
            set_attr(&o, "value", &value);
            o.set_text_content(Some(&name));
            let _ = sel.append_child(&o);
        }
    }
}

/// Where the network looks in `image` for `looks.class`, drawn as five panels: the image, the
/// saliency map, the saliency over the image, Grad-CAM's 10x10 map, Grad-CAM over the image.
pub(crate) fn show(p: &Page, what: &str, own: bool, step: u64, image: &[u8], looks: &Looks, source: &str) {
    let cv = canvas("looks-view");
    let ctx = draw::context(&cv);
    let name = p.classes.get(looks.class).map(String::as_str).unwrap_or("?");
    let probs = tabcnn::cpu::softmax(&looks.logits);
    ctx.set_font("bold 14px system-ui, sans-serif");
    let head = format!("{what} at step {step}: where it looks for \"{name}\" (score {:.3}, {:.1} %)", looks.logits[looks.class], probs[looks.class] * 100.0);
    text(&ctx, &head, 0.0, 10.0, INK, "left");
    ctx.set_font(draw::FONT);
    text(&ctx, &format!("computed by {source}"), 0.0, 30.0, GREY, "left");
    let saliency = looks.saliency();
    let cam = looks.cam();
    let cam_up = cam_on_input(&cam);
    let panels: [(&str, tabcnn::views::Tile); 5] = [
        ("the image", tabcnn::views::Tile { w: 32, h: 32, rgba: rgba_from_record(image) }),
        ("saliency: |d score / d pixel|", heat_tile(&saliency, 32, 32)),
        ("saliency over the image", overlay(image, &saliency)),
        ("Grad-CAM (conv2, 10x10)", heat_tile(&cam, 10, 10)),
        ("Grad-CAM over the image", overlay(image, &cam_up)),
    ];
    let side = 32.0 * SCALE;
    for (i, (label, tile)) in panels.iter().enumerate() {
        let x = i as f64 * (side + GAP);
        text(&ctx, label, x, 52.0, GREY, "left");
        draw::pixels(&ctx, &tile.rgba, tile.w, tile.h, x, 64.0, side / tile.w as f64);
    }
    let e = el("looks");
    let top = (0..looks.dx.len()).max_by(|&a, &b| looks.dx[a].abs().total_cmp(&looks.dx[b].abs())).unwrap_or(0);
    let cam_top = (0..cam.len()).max_by(|&a, &b| cam[a].total_cmp(&cam[b])).unwrap_or(0);
    for (k, v) in [
        ("data-what", what.to_string()),
        ("data-own", (own as u8).to_string()),
        ("data-step", step.to_string()),
        ("data-class", looks.class.to_string()),
        ("data-logits", looks.logits.iter().map(|v| format!("{v:e}")).collect::<Vec<_>>().join(",")),
        ("data-top", format!("{},{},{}", top / 1024, top % 1024 / 32, top % 32)),
        ("data-top-dx", format!("{:e}", looks.dx[top])),
        ("data-cam-top", format!("{},{}", cam_top / 10, cam_top % 10)),
        ("data-source", source.to_string()),
    ] {
        set_attr(&e, k, &v);
    }
    e.set_text_content(Some(&format!("{what}: where it looks for {name}, at step {step}")));
}
