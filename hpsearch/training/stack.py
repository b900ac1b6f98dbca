"""A stack: members (trials) of equal depth, batch size, optimizer and activation as one stacked MLP, trained by
hand-written batched products. :mod:`hpsearch.training.population` forms the stacks and drives them.

Why a hand-written backward pass instead of autograd (or ``torch.func.vmap``): an MLP's gradients are three products
per layer, and writing them straight into one flat gradient buffer (``out=``) lets the optimizer step all members
with a few flat operations (Adam: torch's fused kernel, one pass) instead of one update per tensor.
(``torch.func.vmap`` over autograd was not measured.)

Where a step's time goes (``bench/population_step.py``: 16 members of 64-64 on digits, Adam, batch 64, one thread of
this machine's AMD EPYC, AVX2, MKL): about 1.05 ms a step for all 16 members, of which the batched products are 0.7
ms (a 16 x 64x64x64 product takes 108 us, 78 GFLOP/s, 82 % of the core's 95 for a large product: near its floor),
the optimizer 0.17 ms (it reads and writes the weights, gradients and Adam's two moments: memory, not arithmetic)
and the rest, about twenty small operations and their Python, 0.2 ms. What was cut to get there from 1.4 ms (the
bench went from 4.0x to 5.5-5.9x one trial's samples x members per second): the output layer padded to 16 columns
(:func:`_padded_outputs`: MKL's products with 10 columns took 3x as long as with 16), the step's tensors kept in
buffers between steps, activations in place, the ``1 / batch`` of the mean loss folded into the weight-gradient
products, the bias gradient as a product with a ``1 / batch`` vector, the loss added up term by term in a buffer,
and a 16-member set-up of 4.5 ms instead of 12 (:meth:`Stack._initialise`). Tried and slower: gathering each step's
batch instead of the epoch's shuffle at once; the output layer transposed (a faster log-softmax, slower products);
Adam stepping a copy of the weights divided by the learning rates (2 % faster, not worth a second copy of the
weights); padded logits at the dtype's lowest value (a 16-wide log-softmax, but a slower ``exp``).

Widths that differ within a stack are padded to the stack's widest and kept at zero: a padded unit's incoming
weights and bias are zero, so it outputs ``act(0)``; its outgoing weights are zero too, so it adds nothing
downstream and receives no gradient, and every optimizer here leaves a zero weight with a zero gradient at zero
(weight decay of zero is zero). Only an activation with ``act(0) != 0`` (sigmoid) would feed a padded unit's
outgoing weights a gradient: there the padded units' outputs are masked to zero.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.adam import adam

from hpsearch.data.dataset import Dataset
from hpsearch.model.network import ModelSpec, build_model
from hpsearch.training.fit import EVAL_BATCH, TrialConfig, model_spec
from hpsearch.training.optim import ADAM_BETAS, ADAM_EPS, RMSPROP_ALPHA, lr_factor
from hpsearch.upstream_internals import torch_fused_op

__all__ = ["STACK_COST", "Stack", "input_table"]

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
                "leaky_relu": F.leaky_relu, "gelu": F.gelu}
_LEAKY_SLOPE = 0.01  # nn.LeakyReLU's default, as build_model builds it
_OUTPUT_MULTIPLE = 16  # the output layer is padded to a multiple of this width: _padded_outputs says why
_FUSED_ADAM = torch_fused_op("adam")  # None where torch is not the tested release: the public function then

#: The fixed cost of an epoch of one stack (dispatch, Python, shuffling, validation), in weights: a stack costs about
#: as much as one more member with this many weights (measured on digits, one thread: 1 member of 16-16 4.4 ms an
#: epoch, 16 members of 256-256 231 ms, linear in members x weights in between).
STACK_COST = 26_000



class Stack:
    """Members of equal :func:`~hpsearch.training.population.group_key` (and similar widths) as one stacked MLP,
    its flat optimizer state and its hyperparameters.

    Parameters live in one flat buffer of blocks ``W0, b0, W1, b1, ...``; block ``W_l`` is ``(members, in, out)``
    (``x @ W``, so no transposes in the forward pass) and ``b_l`` is ``(members, 1, out)``. Gradients and the
    optimizer's state have the same layout, so one elementwise operation updates every member's every weight, and
    the per-member hyperparameters are spread to the same layout once (again when members leave).
    """

    def __init__(self, configs: dict[str, TrialConfig], data: Dataset, spec: ModelSpec, n_inputs: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        first = next(iter(configs.values()))
        self.configs, self.ids = dict(configs), list(configs)
        self.device, self.dtype = device, dtype
        self.activation, self.optimizer, self.batch_size = first.activation, first.optimizer, first.batch_size
        self.schedule, self.max_epochs, self.beta2 = first.lr_schedule, first.max_epochs, first.adam_beta2
        self.task, self.spec = data.task, spec  # the members' inputs and outputs: their encoding, their target's scale
        self.widths = [max(c.hidden_sizes[layer] for c in configs.values()) for layer in range(len(first.hidden_sizes))]
        self.n_features, self.n_outputs = n_inputs, data.n_outputs  # the inputs after the numeric encoding
        self.n_targets = data.n_outputs if data.task == "multiclass" else 1  # the table's columns after the features
        self.shapes = list(zip([n_inputs, *self.widths], [*self.widths, _padded_outputs(data.n_outputs)],
                               strict=True))
        self.sizes = {i: list(zip([n_inputs, *c.hidden_sizes], [*c.hidden_sizes, data.n_outputs], strict=True))
                      for i, c in configs.items()}
        self.total_steps = 0  # of a member's whole budget: the learning-rate schedule's length
        self.generators = {i: torch.Generator().manual_seed(c.seed) for i, c in configs.items()}
        self.dropout_generator = torch.Generator(device=device).manual_seed(first.seed)
        self.epoch, self.steps = 0, 0
        self.params = torch.zeros(sum(len(configs) * (n_in + 1) * n_out for n_in, n_out in self.shapes),
                                  dtype=dtype, device=device)
        self._initialise(data)
        self.state = {name: torch.zeros_like(self.params) for name in _STATE[self.optimizer]}
        if self.optimizer in ("adam", "adamw"):  # the fused kernel's step counter: a float32 tensor, as torch keeps it
            self.state["step"] = torch.zeros((), dtype=torch.float32, device=device)
        self._refresh()

    def cost(self) -> float:
        """An epoch's work, in the units of :func:`stacks_by_width`: the fixed cost of a stack plus its weights."""
        weights = sum(n_in * n_out for n_in, n_out in self.shapes)
        return (STACK_COST + len(self.ids) * weights) / self.batch_size  # steps per epoch: 1 / batch size

    # ----------------------------------------------------------------------------------------- setting up
    def _initialise(self, data: Dataset) -> None:
        """Every member's weights as ``fit`` initialises them, padded with zeros to the stack's widths.

        ``fit`` seeds torch's generators and builds the model; building constructs the ``nn.Linear`` layers in
        order, each drawing its weights with ``reset_parameters``. Here the CPU generator alone is seeded (the model
        is built on the CPU; ``torch.manual_seed`` also seeds every GPU kind and takes a stack trace for each, a
        millisecond), and one model built per shape is drawn again with ``reset_parameters`` layer by layer: the
        same draws from the same generator, a third of building a model (16 members: 8 ms to set up, now 4).
        """
        blocks = self._blocks(self.params)
        models: dict[tuple[int, ...], list[nn.Linear]] = {}
        with torch.random.fork_rng(devices=[]):
            for member, config in enumerate(self.configs.values()):
                torch.default_generator.manual_seed(config.seed)
                linears = models.get(config.hidden_sizes)
                if linears is None:
                    model = build_model(model_spec(config, data))
                    linears = models[config.hidden_sizes] = [m for m in model if isinstance(m, nn.Linear)]
                else:
                    for layer in linears:
                        layer.reset_parameters()
                with torch.no_grad():
                    for layer, weight, bias in zip(linears, blocks[::2], blocks[1::2], strict=True):
                        weight[member, : layer.in_features, : layer.out_features] = layer.weight.T
                        bias[member, 0, : layer.out_features] = layer.bias

    def _blocks(self, flat: torch.Tensor, members: int | None = None) -> list[torch.Tensor]:
        """Views of a flat buffer as ``[W0, b0, W1, b1, ...]`` stacked over ``members``."""
        members = len(self.ids) if members is None else members
        views, start = [], 0
        for n_in, n_out in self.shapes:
            for shape in ((members, n_in, n_out), (members, 1, n_out)):
                size = math.prod(shape)
                views.append(flat[start : start + size].view(shape))
                start += size
        return views

    def _spread(self, values: list[float]) -> torch.Tensor:
        """Per-member values as a flat buffer of the parameters' layout (each weight gets its member's value)."""
        members = len(values)
        per_block = torch.tensor(values * (2 * len(self.shapes)), dtype=self.dtype, device=self.device)
        repeats = torch.tensor([size for n_in, n_out in self.shapes for size in (n_in * n_out, n_out)],
                               device=self.device).repeat_interleave(members)
        return per_block.repeat_interleave(repeats, output_size=len(self.params))

    def _refresh(self) -> None:
        """Views, gradient buffer, hyperparameters and masks for the current members (after a change)."""
        configs = [self.configs[i] for i in self.ids]
        self.weights_ = self._blocks(self.params)
        self.grads = torch.zeros_like(self.params)
        self.grad_blocks = self._blocks(self.grads)
        # per layer, the views one step reads and writes, made once (a step's Python costs as much as its small ops)
        self.layers = list(zip(self.weights_[::2], self.weights_[1::2], [w.transpose(1, 2) for w in self.weights_[::2]],
                               self.grad_blocks[::2], self.grad_blocks[1::2], strict=True))
        self.buffers: dict[int, _Buffers] = {}  # by batch length: the last batch of an epoch can be shorter
        self.shuffled: torch.Tensor | None = None
        self.scratch = torch.empty_like(self.params)
        self.lr = self._spread([c.lr for c in configs])
        decays = [c.weight_decay for c in configs]
        self.weight_decay = self._spread(decays) if any(decays) else None
        if self.optimizer == "adamw":
            self.decay = self._spread([1 - c.lr * c.weight_decay for c in configs])
        momenta = [c.momentum for c in configs]
        self.momentum = self._spread(momenta) if any(momenta) else None
        self.unit_masks = self._unit_masks(configs)
        if self.schedule != "constant" and self.optimizer == "adamw":
            self.lr_decay = self._spread([c.lr * c.weight_decay for c in configs])
        dropouts = torch.tensor([c.dropout for c in configs], dtype=self.dtype, device=self.device).view(-1, 1, 1)
        self.dropout = dropouts if any(c.dropout > 0 for c in configs) else None
        self.dropout_scale = 1 / (1 - dropouts)
        smoothing = torch.tensor([c.label_smoothing for c in configs], dtype=self.dtype, device=self.device)
        self.smoothing = None
        if self.task != "regression" and any(c.label_smoothing > 0 for c in configs):
            classes = self.n_outputs if self.task == "multiclass" else 2
            self.smoothing = (1 - smoothing.view(-1, 1, 1), (smoothing / classes).view(-1, 1, 1))

    def _unit_masks(self, configs: list[TrialConfig]) -> list[torch.Tensor | None]:
        """Per hidden layer, 1 for a member's real units and 0 for padding; None where padding is harmless."""
        zero = _ACTIVATIONS[self.activation](torch.zeros(1)).item()
        masks: list[torch.Tensor | None] = []
        for layer, width in enumerate(self.widths):
            real = torch.tensor([c.hidden_sizes[layer] for c in configs], device=self.device)
            mask = (torch.arange(width, device=self.device) < real.view(-1, 1)).to(self.dtype).unsqueeze(1)
            masks.append(mask if zero != 0 and not bool(mask.all()) else None)
        return masks

    # ------------------------------------------------------------------------------------------- training
    def train_epoch(self, table: torch.Tensor) -> list[float]:
        """One shuffled pass for every member over ``table`` (features, then targets: :func:`_table`); returns
        each member's mean training loss.

        Each member's shuffled copy of the table is gathered once per epoch (one ``index_select`` for all of
        them, as ``fit`` gathers its one), so that a batch is a slice of it, not a gather.
        """
        self.epoch += 1
        n = len(table)
        self.total_steps = self.max_epochs * math.ceil(n / self.batch_size)
        members = len(self.ids)
        orders = torch.stack([torch.randperm(n, generator=self.generators[i]) for i in self.ids]).to(table.device)
        if self.shuffled is None or self.shuffled.shape != (members * n, table.shape[1]):
            self.shuffled = table.new_empty(members * n, table.shape[1])  # kept: a fresh one pages in each epoch
        shuffled = torch.index_select(table, 0, orders.view(-1), out=self.shuffled).view(members, n, -1)
        for buffers in self.buffers.values():
            buffers.loss.zero_()
        features, targets = shuffled[..., : self.n_features], shuffled[..., self.n_features :]
        for start in range(0, n, self.batch_size):
            self._step(features[:, start : start + self.batch_size], targets[:, start : start + self.batch_size])
        total = sum(buffers.loss.sum((1, 2)) for buffers in self.buffers.values())
        return (total / n).tolist()

    def _step(self, x: torch.Tensor, target: torch.Tensor) -> None:
        """Forward, backward and update for one batch; adds each member's losses to the batch length's buffer.

        The intermediate tensors go to buffers kept from step to step (:class:`_Buffers`); the gradient is of the
        batch's summed loss until the weight gradients, whose products scale it by ``1 / batch`` for free.
        """
        buffers = self._buffers(x.shape[1])
        inputs, pre, post, masks = [x], [], [], []
        for layer, (W, b, _, _, _) in enumerate(self.layers[:-1]):
            z = torch.baddbmm(b, inputs[-1], W, out=buffers.hidden[layer])
            a = _activate(self.activation, z)  # in place but for gelu, whose gradient needs z
            mask = self._mask(layer, z.shape)
            pre.append(z), post.append(a), masks.append(mask)
            inputs.append(a if mask is None else a * mask)
        W, b = self.layers[-1][:2]
        torch.baddbmm(b, inputs[-1], W, out=buffers.out)
        if self.smoothing is not None:  # each member's smoothed class probabilities, as torch smooths them
            keep, spread = self.smoothing
            target = torch.addcmul(spread, target, keep)
        _loss_and_grad(self.task, buffers.out_real, target, buffers.grad_real, buffers.loss)
        grad, scale = buffers.grad, 1 / x.shape[1]
        for layer in range(len(self.layers) - 1, -1, -1):
            _, _, W_T, gW, gb = self.layers[layer]
            given = inputs[layer]  # the layer's input: a hidden buffer has its transpose ready
            kept = layer and given is buffers.hidden[layer - 1]
            torch.baddbmm(gW, buffers.hidden_T[layer - 1] if kept else given.transpose(1, 2), grad, beta=0,
                          alpha=scale, out=gW)
            torch.bmm(buffers.mean, grad, out=gb)  # the bias's gradient: the batch mean, as a product
            if layer:
                grad = torch.bmm(grad, W_T, out=buffers.hidden_grad[layer - 1])
                if masks[layer - 1] is not None:
                    grad.mul_(masks[layer - 1])
                grad = _activation_grad(self.activation, grad, pre[layer - 1], post[layer - 1])
        self._update()

    def _buffers(self, batch: int) -> _Buffers:
        if batch not in self.buffers:
            self.buffers[batch] = _Buffers(len(self.ids), batch, self.shapes, self.n_outputs, self.n_targets,
                                           self.dtype, self.device)
        return self.buffers[batch]

    def _mask(self, layer: int, shape: torch.Size) -> torch.Tensor | None:
        """Dropout (each member its own rate) times the padding mask of one hidden layer's outputs, or None."""
        mask = self.unit_masks[layer]
        if self.dropout is None:
            return mask
        draw = torch.rand(shape, generator=self.dropout_generator, device=self.device, dtype=self.dtype)
        keep = (draw >= self.dropout).to(self.dtype).mul_(self.dropout_scale)
        return keep if mask is None else keep.mul_(mask)

    def _update(self) -> None:
        """One step of the stack's optimizer on the flat buffers: torch.optim's math with per-member values.

        Adam and AdamW run torch's fused Adam kernel (one pass over the buffers instead of ten) with a learning
        rate of 1 on a zeroed buffer, which leaves there minus the unscaled step; each member's learning rate then
        scales it into the weights. Weight decay (L2 for Adam, SGD and RMSprop; decoupled for AdamW) is applied
        per member around it, as torch.optim applies it. A learning-rate schedule scales every member's learning
        rate by the same factor (:func:`~hpsearch.training.optim.lr_factor`: the members of a stack share it).
        """
        factor = lr_factor(self.schedule, self.steps, self.total_steps)
        self.steps += 1
        p, g, tmp, s = self.params, self.grads, self.scratch, self.state
        if self.weight_decay is not None and self.optimizer != "adamw":
            g.addcmul_(self.weight_decay, p)
        if self.optimizer in ("adam", "adamw"):
            if self.optimizer == "adamw":
                p.mul_(self.decay) if self.schedule == "constant" else p.addcmul_(p, self.lr_decay, value=-factor)
            if _FUSED_ADAM is not None:  # the op itself, as hpsearch.training.optim calls it: the public
                s["step"] += 1             # function's Python costs more than the kernel here
                _FUSED_ADAM([tmp.zero_()], [g], [s["exp_avg"]], [s["exp_avg_sq"]], [], [s["step"]], amsgrad=False,
                            lr=1.0, beta1=ADAM_BETAS[0], beta2=self.beta2, weight_decay=0.0, eps=ADAM_EPS,
                            maximize=False, grad_scale=None, found_inf=None)
            else:
                adam([tmp.zero_()], [g], [s["exp_avg"]], [s["exp_avg_sq"]], [], [s["step"]], fused=True,
                     amsgrad=False, beta1=ADAM_BETAS[0], beta2=self.beta2, lr=1.0, weight_decay=0.0, eps=ADAM_EPS,
                     maximize=False)
            p.addcmul_(tmp, self.lr, value=factor)
        elif self.optimizer == "sgd":
            if self.momentum is not None:
                buffer = s["momentum_buffer"]
                buffer.copy_(g) if self.steps == 1 else torch.addcmul(g, buffer, self.momentum, out=buffer)
                g = buffer
            p.addcmul_(g, self.lr, value=-factor)
        else:  # rmsprop
            s["square_avg"].mul_(RMSPROP_ALPHA).addcmul_(g, g, value=1 - RMSPROP_ALPHA)
            torch.sqrt(s["square_avg"], out=tmp).add_(ADAM_EPS)
            if self.momentum is not None:
                s["momentum_buffer"].mul_(self.momentum).addcdiv_(g, tmp)
                p.addcmul_(s["momentum_buffer"], self.lr, value=-factor)
            else:
                p.addcmul_(torch.div(g, tmp, out=tmp), self.lr, value=-factor)

    # ----------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, X: torch.Tensor, y: torch.Tensor) -> dict[str, dict[str, float]]:
        """``train.evaluate``'s metrics on a split (``X`` encoded as the stack's inputs), for every member
        (``val_`` prefixed)."""
        W, b = self.weights_[::2], self.weights_[1::2]
        members = len(self.ids)
        chunks = []
        for start in range(0, len(X), EVAL_BATCH):
            h = X[start : start + EVAL_BATCH].expand(members, -1, -1)
            for layer in range(len(self.widths)):
                h = _activate(self.activation, torch.baddbmm(b[layer], h, W[layer]))
                if self.unit_masks[layer] is not None:
                    h = h.mul_(self.unit_masks[layer])
            chunks.append(torch.baddbmm(b[-1], h, W[-1])[..., : self.n_outputs])
        out = torch.cat(chunks, 1) if len(chunks) > 1 else chunks[0]  # (members, n, outputs)
        if self.task == "multiclass":
            picked = torch.log_softmax(out, 2).gather(2, y.view(1, -1, 1).expand(members, -1, 1))
            loss = -picked.squeeze(2).mean(1)  # cross-entropy (F.cross_entropy on (members, classes, n) is slow)
            metrics = {"val_loss": loss, "val_accuracy": _accuracy(out.argmax(2) == y)}
        elif self.task == "binary":
            out = out.squeeze(2)
            loss = F.binary_cross_entropy_with_logits(out, y.expand(members, -1), reduction="none").mean(1)
            metrics = {"val_loss": loss, "val_accuracy": _accuracy((out > 0).to(y.dtype) == y)}
        else:
            spec = self.spec
            if spec.target_transform == "none":
                error = out.squeeze(2) - y
            else:  # in the target's units, standardised as the target is (train.evaluate's rule)
                error = (spec.to_units(out.squeeze(2).double()) - spec.target_mean) / spec.target_std - y
            scaled = error * spec.target_std
            metrics = {"val_loss": error.pow(2).mean(1), "val_rmse": scaled.pow(2).mean(1).sqrt(),
                       "val_mae": scaled.abs().mean(1)}
        values = {k: v.tolist() for k, v in metrics.items()}
        return {i: {k: v[m] for k, v in values.items()} for m, i in enumerate(self.ids)}

    # ------------------------------------------------------------------------------------------ membership
    def weights(self, member_id: str) -> list[torch.Tensor]:
        """One member's unpadded ``[W0, b0, ...]`` (``W`` as ``(in, out)``, ``b`` as ``(out,)``), on the CPU."""
        m = self.ids.index(member_id)
        result = []
        for (n_in, n_out), weight, bias in zip(self.sizes[member_id], self.weights_[::2], self.weights_[1::2],
                                                  strict=True):
            result += [weight[m, :n_in, :n_out].cpu().clone(), bias[m, 0, :n_out].cpu().clone()]
        return result

    def remove(self, ids: list[str]) -> None:
        """Shrink the stack: the parameters and the optimizer's state keep only the other members' rows."""
        if not ids:
            return
        keep = [m for m, i in enumerate(self.ids) if i not in ids]
        index = torch.tensor(keep, device=self.device)
        before = len(self.ids)
        self.ids = [self.ids[m] for m in keep]
        for member_id in ids:
            del self.configs[member_id], self.generators[member_id], self.sizes[member_id]
        if not self.ids:
            return
        self.params = self._take(self.params, index, before)
        self.state = {name: self._take(t, index, before) if t.dim() else t for name, t in self.state.items()}
        self._refresh()

    def _take(self, flat: torch.Tensor, index: torch.Tensor, members: int) -> torch.Tensor:
        return torch.cat([block.index_select(0, index).reshape(-1) for block in self._blocks(flat, members)])


_STATE = {"adam": ("exp_avg", "exp_avg_sq"), "adamw": ("exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",),
          "rmsprop": ("square_avg", "momentum_buffer")}




class _Buffers:
    """The tensors one step of a stack writes, kept from step to step (for one batch length and member count):
    allocating them anew each step costs more than the elementwise work they hold."""

    def __init__(self, members: int, batch: int, shapes: list[tuple[int, int]], outputs: int, targets: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        def empty(*shape: int) -> torch.Tensor:
            return torch.empty(shape, dtype=dtype, device=device)

        self.hidden = [empty(members, batch, n_out) for _, n_out in shapes[:-1]]  # pre-activations, then outputs
        self.hidden_T = [h.transpose(1, 2) for h in self.hidden]
        self.hidden_grad = [empty(members, batch, n_out) for _, n_out in shapes[:-1]]
        self.out = empty(members, batch, shapes[-1][1])
        self.grad = torch.zeros_like(self.out)  # the padded outputs' columns stay zero: no gradient flows there
        self.out_real, self.grad_real = self.out[..., :outputs], self.grad[..., :outputs]
        self.mean = torch.full((members, 1, batch), 1 / batch, dtype=dtype, device=device)
        self.loss = torch.zeros(members, batch, targets, dtype=dtype, device=device)  # an epoch's, term by term


def _padded_outputs(n_outputs: int) -> int:
    """The output layer's width in the stack: a multiple of 16.

    MKL's batched products with a narrow last dimension take a slow path: on this machine (one AVX2 core) the
    output layer of 10 classes cost 115-120 us a product at 16 members of 64 units and batch 64, and 34-39 us padded
    to 16; a single output (regression, binary) 75-85 us, also about 35 padded. The padded columns have zero
    weights and biases, the loss reads only the real ones, and their gradient stays zero, so they stay zero.
    """
    return -(-n_outputs // _OUTPUT_MULTIPLE) * _OUTPUT_MULTIPLE


def input_table(X: torch.Tensor, y: torch.Tensor, task: str, n_outputs: int) -> torch.Tensor:
    """The training rows as one ``(n, features + targets)`` tensor: the targets one-hot for a multiclass task, so
    that one gather shuffles both and a batch's targets are what its loss needs."""
    targets = F.one_hot(y, n_outputs).to(X.dtype) if task == "multiclass" else y.to(X.dtype).unsqueeze(1)
    return torch.cat([X, targets], 1)


def _loss_and_grad(task: str, out: torch.Tensor, target: torch.Tensor, grad: torch.Tensor, loss: torch.Tensor) -> None:
    """Adds each sample's loss to ``loss`` (summed over the epoch: one addition a step instead of four); writes the
    gradient of the batch's summed loss w.r.t. ``out`` into ``grad``.

    The losses of ``train.fit``: cross-entropy (``target`` one-hot), binary cross-entropy on logits, and mean
    squared error on the standardised target (``fit`` takes their batch mean: :meth:`Stack._step` divides).
    """
    if task == "multiclass":
        log_p = torch.log_softmax(out, 2)
        loss.addcmul_(log_p, target, value=-1)
        torch.sub(log_p.exp_(), target, out=grad)  # exp's own out= into the strided columns is 4x slower
    elif task == "binary":
        loss.add_(F.binary_cross_entropy_with_logits(out, target, reduction="none"))
        torch.sub(torch.sigmoid(out), target, out=grad)
    else:
        error = torch.sub(out, target, out=grad)
        loss.addcmul_(error, error)
        error.mul_(2)


def _accuracy(correct: torch.Tensor) -> torch.Tensor:
    """Each member's share of correct predictions, in float32 as ``train.evaluate`` counts it."""
    return correct.float().mean(1)


def _activate(name: str, z: torch.Tensor) -> torch.Tensor:
    """``act(z)``, in place (``z`` then holds the output) but for gelu, whose gradient needs ``z`` itself."""
    if name == "relu":
        return z.relu_()
    if name == "leaky_relu":
        return F.leaky_relu_(z, _LEAKY_SLOPE)
    if name == "gelu":
        return F.gelu(z)
    return z.tanh_() if name == "tanh" else z.sigmoid_()


def _activation_grad(name: str, grad: torch.Tensor, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The gradient w.r.t. a layer's pre-activation ``z`` from the one w.r.t. its output ``a = act(z)``.

    ``z`` may be ``a`` itself (:func:`_activate` works in place): only gelu reads ``z``, and leaky ReLU only its
    sign, which ``a`` shares."""
    if name == "relu":
        return grad.mul_(a.sign_())  # 1 where z > 0, else 0: cheaper than a boolean mask; a is read no more
    if name == "leaky_relu":
        return torch.where(z > 0, grad, grad * _LEAKY_SLOPE)
    if name == "tanh":
        return grad.mul_(1 - a * a)
    if name == "sigmoid":
        return grad.mul_(a * (1 - a))
    cdf = 0.5 * (1 + torch.erf(z * (1 / math.sqrt(2))))  # gelu, exact form (nn.GELU's default)
    return grad.mul_(cdf + z * torch.exp(-0.5 * z * z) * (1 / math.sqrt(2 * math.pi)))
