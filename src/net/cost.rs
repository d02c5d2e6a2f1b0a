//! What a network costs, layer by layer, for one image: its parameters, its multiply-adds and
//! the floats of its output; and the totals, with training FLOPs by the usual count (the
//! forward and the two halves of the backward as many multiply-adds each, 2 FLOPs a
//! multiply-add, as `model::Arch::train_flops_per_image`). `tabcnn net` prints this table.
//!
//! Multiply-adds count convolutions, linear layers and batch norm (one per element: its
//! normalisation folds into one scale and shift); activations, pooling, dropout, scaling and a
//! block's sum are elementwise and left out, as most counts do.

use super::params::Params;
use super::text::layer_text;
use super::{Layer, Net, Shape, Step};

/// One layer's row.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub position: String,
    /// The layer's text, indented by its depth inside blocks.
    pub layer: String,
    pub output: Shape,
    pub params: usize,
    pub macs: u64,
}

/// The whole table: a row a layer (blocks' layers after their block) and the totals.
#[derive(Clone, Debug, PartialEq)]
pub struct Cost {
    pub rows: Vec<Row>,
    pub params: usize,
    pub macs: u64,
    /// Floats of every layer's output for one image: what training keeps for the backward.
    pub activations: u64,
}

impl Cost {
    /// Training FLOPs for one image: 6 a forward multiply-add.
    pub fn train_flops(&self) -> u64 {
        6 * self.macs
    }
}

/// Multiply-adds of one layer (not a block) on one image.
pub fn layer_macs(layer: &Layer, input: Shape, output: Shape) -> u64 {
    let (c, out) = (input.channels() as u64, output.len() as u64);
    match *layer {
        Layer::Conv { k, .. } => out * c * (k * k) as u64,
        Layer::Linear { .. } => out * c,
        Layer::BatchNorm { .. } => out,
        _ => 0,
    }
}

/// The table of `net`.
pub fn cost(net: &Net) -> Result<Cost, String> {
    let steps = net.infer()?;
    let p = Params::new(net, &steps);
    let rows: Vec<Row> = steps
        .iter()
        .enumerate()
        .map(|(i, s): (usize, &Step)| Row {
            position: s.place.position.clone(),
            // A block is a row of its own ("res"), its layers indented below it.
            layer: format!("{}{}", "  ".repeat(s.depth), if matches!(s.layer, Layer::Res(_)) { "res".to_string() } else { layer_text(&s.layer) }),
            output: s.output,
            params: p.params.iter().filter(|t| t.step == i && t.trained).map(|t| t.len()).sum(),
            macs: if matches!(s.layer, Layer::Res(_)) { 0 } else { layer_macs(&s.layer, s.input, s.output) },
        })
        .collect();
    Ok(Cost {
        params: p.params.iter().filter(|t| t.trained).map(|t| t.len()).sum(),
        macs: rows.iter().map(|r| r.macs).sum(),
        activations: steps.iter().filter(|s| !matches!(s.layer, Layer::Res(_))).map(|s| s.output.len64()).sum(),
        rows,
    })
}

/// Thousands separated by commas, for the table.
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The table as `tabcnn net` prints it.
pub fn table(net: &Net) -> Result<String, String> {
    let c = cost(net)?;
    let width = c.rows.iter().map(|r| r.layer.len()).max().unwrap_or(5).max(5);
    let mut out = format!("{:>5}  {:<width$}  {:>10}  {:>12}  {:>14}\n", "#", "layer", "output", "parameters", "multiply-adds");
    for r in &c.rows {
        let params = if r.params == 0 { String::new() } else { grouped(r.params as u64) };
        let macs = if r.macs == 0 { String::new() } else { grouped(r.macs) };
        out += &format!("{:>5}  {:<width$}  {:>10}  {:>12}  {:>14}\n", r.position, r.layer, r.output.to_string(), params, macs);
    }
    out += &format!(
        "total: {} trained parameters; per image {} multiply-adds forward, {:.2} MFLOP training, {} activation floats\n",
        grouped(c.params as u64),
        grouped(c.macs),
        c.train_flops() as f64 / 1e6,
        grouped(c.activations)
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Arch;
    use crate::net::text::parse;

    #[test]
    fn lenets_cost_is_the_tutorials() {
        for (t, a) in [("lenet", Arch::LENET), ("wide", Arch::WIDE)] {
            let c = cost(&parse(t).unwrap()).unwrap();
            assert_eq!(c.macs, a.forward_macs(), "{t}");
            assert_eq!(c.train_flops(), a.train_flops_per_image(), "{t}");
            assert_eq!(c.params, crate::model::Layout::new(a).count(), "{t}");
        }
        let t = table(&parse("lenet").unwrap()).unwrap();
        println!("{t}");
        assert!(t.contains("    1  conv(6,5)"), "{t}");
        assert!(t.contains("6x28x28"));
        assert!(t.contains("352,800"), "conv1: 6 x 28 x 28 x 3 x 5 x 5");
        assert!(t.contains("total: 62,006 trained parameters; per image 651,720 multiply-adds forward, 3.91 MFLOP training"), "{t}");
    }

    #[test]
    fn blocks_and_batch_norm_are_counted() {
        let c = cost(&parse("conv(8,3,pad=1,bias=0) bn(scale=0) relu res(conv(8,3,pad=1) bn relu) gap flatten linear(10)").unwrap()).unwrap();
        // conv 8x32x32 x 3x3x3; bn 8x32x32 (gamma fixed: 8 parameters); the block's conv and bn.
        assert_eq!(c.macs, 8 * 1024 * 27 + 8 * 1024 + 8 * 1024 * 72 + 8 * 1024 + 80);
        assert_eq!(c.params, 216 + 8 + (576 + 8 + 16) + 90);
        let t = table(&parse("conv(8,3,pad=1,bias=0) bn(scale=0) relu res(conv(8,3,pad=1) bn relu) gap flatten linear(10)").unwrap()).unwrap();
        println!("{t}");
        assert!(t.contains("  4.1    conv(8,3,pad=1)"), "a block's layers are indented under it:\n{t}");
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(grouped(999), "999");
    }
}
