//! How a network's layers are wired, for every engine: each layer's source (the image or the
//! layer whose output it reads), the order the layers run in (a residual block's sum after its
//! last layer), and where each layer's tensors lie in the packed parameters and buffers.
//! Built once from `Net::infer`'s steps and `Params`, before anything is allocated.

use super::params::{Params, Role};
use super::{Layer, Net, Step};
use std::ops::Range;

/// A layer's tensors in the packed vectors (parameters, or buffers for the running statistics).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Slots {
    pub weight: Option<Range<usize>>,
    pub bias: Option<Range<usize>>,
    pub gamma: Option<Range<usize>>,
    pub beta: Option<Range<usize>>,
    pub running_mean: Option<Range<usize>>,
    pub running_var: Option<Range<usize>>,
}

/// A network ready to run: its steps (`Net::infer`), tensors (`Params`) and wiring.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub params: Params,
    /// src[i]: the step whose output step i reads, None for the image. A block reads its own
    /// input, as its first layer does.
    pub src: Vec<Option<usize>>,
    /// last[i]: for a residual block, its body's last part (a layer or a block, one level
    /// deeper), whose output the block adds to its input; i itself for any other layer.
    pub last: Vec<usize>,
    /// The order the steps run in: every layer after its source, a block after its last layer.
    pub order: Vec<usize>,
    /// The step whose output is the logits [N,10].
    pub output: usize,
    pub slots: Vec<Slots>,
}

impl Plan {
    /// The plan of `net`, or why it does not fit (`Net::infer`'s error).
    pub fn new(net: &Net) -> Result<Plan, String> {
        let steps = net.infer()?;
        let params = Params::new(net, &steps);
        Ok(Plan::from_steps(steps, params))
    }

    pub fn from_steps(steps: Vec<Step>, params: Params) -> Plan {
        let len = steps.len();
        // A block's layers are the steps after it that are deeper than it (infer lists them
        // so); its last is the last of those one level deeper: a layer, or a block within.
        let last: Vec<usize> = (0..len)
            .map(|i| match steps[i].layer {
                Layer::Res(_) => {
                    (i + 1..len).take_while(|&j| steps[j].depth > steps[i].depth).filter(|&j| steps[j].depth == steps[i].depth + 1).last().expect("infer refuses empty blocks")
                }
                _ => i,
            })
            .collect();
        let (mut src, mut order) = (vec![None; len], Vec::with_capacity(len));
        let mut current = None;
        let mut open: Vec<usize> = Vec::new();
        for i in 0..len {
            src[i] = current;
            if matches!(steps[i].layer, Layer::Res(_)) {
                open.push(i);
                continue;
            }
            order.push(i);
            current = Some(i);
            // A block whose last part just finished closes (innermost first, and an enclosing
            // block whose last part was that block closes after it); what follows reads it.
            while let Some(&b) = open.last().filter(|&&b| Some(last[b]) == current) {
                open.pop();
                order.push(b);
                current = Some(b);
            }
        }
        let mut slots = vec![Slots::default(); len];
        for t in params.params.iter().chain(&params.buffers) {
            let s = &mut slots[t.step];
            let place = match t.role {
                Role::Weight => &mut s.weight,
                Role::Bias => &mut s.bias,
                Role::NormScale => &mut s.gamma,
                Role::NormShift => &mut s.beta,
                Role::RunningMean => &mut s.running_mean,
                Role::RunningVar => &mut s.running_var,
            };
            *place = Some(t.range());
        }
        let output = current.expect("infer refuses an empty network");
        Plan { steps, params, src, last, order, output, slots }
    }

    /// Whether a batch of `batch` can train: batch norm in training needs more than one value
    /// per channel (PyTorch's rule), which a batch of 1 on a 1x1 input (or features) lacks.
    pub fn check_batch_norm(&self, batch: usize) -> Result<(), String> {
        for s in self.steps.iter().filter(|s| matches!(s.layer, Layer::BatchNorm { .. })) {
            let plane = match s.input {
                super::Shape::Maps { h, w, .. } => h * w,
                super::Shape::Flat(_) => 1,
            };
            if batch * plane < 2 {
                return Err(format!(
                    "layer {}, {}: batch norm in training needs more than one value per channel, and batch {batch} of {} gives one: train at batch 2 or more",
                    s.place.position, s.place.text, s.input
                ));
            }
        }
        Ok(())
    }

    /// Floats per image of step i's input.
    pub fn input_len(&self, i: usize) -> usize {
        self.steps[i].input.len()
    }

    /// Floats per image of step i's output.
    pub fn output_len(&self, i: usize) -> usize {
        self.steps[i].output.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::text::parse;

    #[test]
    fn blocks_run_after_their_layers_and_feed_what_follows() {
        // 1 conv, 2 res(3 relu, 4 res(5 conv)), 6 flatten, 7 linear; steps 0..6 in that order.
        let p = Plan::new(&parse("conv(4,3,pad=1) res(relu res(conv(4,3,pad=1))) flatten linear(10)").unwrap()).unwrap();
        assert_eq!(p.src, [None, Some(0), Some(0), Some(2), Some(2), Some(1), Some(5)]);
        // The outer block adds its input to the inner block's sum, not to the inner conv's.
        assert_eq!(p.last, [0, 3, 2, 4, 4, 5, 6]);
        assert_eq!(p.order, [0, 2, 4, 3, 1, 5, 6]);
        assert_eq!(p.output, 6);
        assert!(p.slots[0].weight.is_some() && p.slots[0].bias.is_some() && p.slots[1] == Slots::default());
        assert_eq!(p.slots[4].weight, p.params.get("1.body.1.body.0.weight").map(|t| t.range()));
    }

    #[test]
    fn batch_norm_needs_two_values_per_channel_to_train() {
        let p = Plan::new(&parse("flatten linear(8) bn relu linear(10)").unwrap()).unwrap();
        assert_eq!(
            p.check_batch_norm(1).unwrap_err(),
            "layer 3, bn: batch norm in training needs more than one value per channel, and batch 1 of 8 gives one: train at batch 2 or more"
        );
        assert!(p.check_batch_norm(2).is_ok());
        let maps = Plan::new(&parse("conv(4,3) bn flatten linear(10)").unwrap()).unwrap();
        assert!(maps.check_batch_norm(1).is_ok(), "a map has 30x30 values per channel");
    }
}
