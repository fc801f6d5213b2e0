"""Rewrites of a network for inference that keep what it computes (see `optimize`):

- `fold_batchnorms`: every BatchNorm2d after a convolution folded into it (running statistics).
- `fuse_convolutions`: on the CPU, a convolution and the activation after it, or the residual addition
  and activation after it, become one oneDNN call (`FusedConv2d`), which writes the output once.

Both find what to rewrite by tracing the network (torch.fx), so they work for any backbone.
"""
import operator
from typing import Dict, Optional, Tuple

import torch
from torch import fx, nn
from torch.nn import functional as F

__all__ = ['fold_batchnorms', 'fold_batchnorm', 'fuse_convolutions', 'FusedConv2d']


def module_calls(graph: fx.Graph) -> Dict[str, int]:
    """How often each submodule is called in the graph."""
    calls: Dict[str, int] = {}
    for node in graph.nodes:
        if node.op == 'call_module':
            calls[node.target] = calls.get(node.target, 0) + 1
    return calls


def fold_batchnorms(network: nn.Module) -> nn.Module:
    """Folds, in place, every BatchNorm2d whose only input is a Conv2d used nowhere else into that
    convolution, and replaces it by an identity. Returns `network`."""
    graph = fx.symbolic_trace(network).graph
    modules = dict(network.named_modules())
    calls = module_calls(graph)
    for node in graph.nodes:
        if node.op != 'call_module' or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if (isinstance(source, fx.Node) and source.op == 'call_module'
                and isinstance(modules[source.target], nn.Conv2d) and len(source.users) == 1
                and calls[source.target] == 1 and calls[node.target] == 1):
            fold_batchnorm(modules[source.target], modules[node.target])
            network.set_submodule(node.target, nn.Identity())
    return network


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """conv's weight and bias become those of norm(conv(x)) with norm's running statistics (computed in
    float64, stored in conv's dtype)."""
    dtype = conv.weight.dtype
    scale = norm.weight.double() / (norm.running_var.double() + norm.eps).sqrt()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    conv.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(dtype))
    conv.bias = nn.Parameter(((bias - norm.running_mean.double()) * scale + norm.bias.double()).to(dtype),
                             requires_grad=False)


# Activations oneDNN applies to a convolution's output: name -> (oneDNN attribute, its scalars).
ONEDNN_ACTIVATIONS = {'relu': ('relu', []), 'relu6': ('hardtanh', [0., 6.]), 'hardswish': ('hardswish', []),
                      'hardsigmoid': ('hardsigmoid', []), None: ('none', [])}
# In place on the convolution's fresh output.
PLAIN_ACTIVATIONS = {'relu': F.relu_, 'relu6': lambda y: F.relu6(y, inplace=True),
                     'hardswish': lambda y: F.hardswish(y, inplace=True),
                     'hardsigmoid': lambda y: F.hardsigmoid(y, inplace=True)}


class FusedConv2d(nn.Module):
    """activation(conv(x) + other), `other` optional: on the CPU (float32, bfloat16) one oneDNN call with
    the weight reordered once into oneDNN's layout (kept while the weight is unchanged); elsewhere, the
    plain operations.

    Args:
        conv: the convolution (zero padding); its parameters are shared, not copied.
        activation: 'relu', 'relu6', 'hardswish', 'hardsigmoid' or None.
        onednn: whether CPU tensors go through oneDNN (False: the plain operations everywhere, as on a GPU).
    Inputs:
        x: (B, C_in, H, W); other: None or (B, C_out, H', W') as conv(x).
    Output:
        (B, C_out, H', W'), a new tensor.
    """

    def __init__(self, conv: nn.Conv2d, activation: Optional[str] = None, onednn: bool = True):
        super().__init__()
        self.onednn = onednn
        if activation not in ONEDNN_ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(map(str, ONEDNN_ACTIVATIONS))}, got {activation!r}")
        if conv.padding_mode != 'zeros' or isinstance(conv.padding, str):
            raise ValueError('FusedConv2d takes convolutions with numeric zero padding')
        self.conv, self.activation = conv, activation
        self.attr, self.scalars = ONEDNN_ACTIVATIONS[activation]
        self.packed: Optional[Tuple[Tuple, torch.Tensor]] = None  # (weight version and dtype, weight)

    def forward(self, x: torch.Tensor, other: Optional[torch.Tensor] = None) -> torch.Tensor:
        conv = self.conv
        if (self.onednn and x.device.type == 'cpu' and x.dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.enabled
                and x.dtype == conv.weight.dtype and not torch.jit.is_tracing()):  # a trace records plain operations
            arguments = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
            weight = self.packed_weight(x)
            if other is None:
                return torch.ops.mkldnn._convolution_pointwise(x, weight, conv.bias, *arguments, self.attr,
                                                               self.scalars, None)
            if self.activation in ('relu', None):  # what oneDNN applies after an addition
                return torch.ops.mkldnn._convolution_pointwise.binary(x, other, weight, conv.bias, *arguments,
                                                                      'add', None, self.activation, [], None)
        y = conv(x)
        if other is not None:
            y = y.add_(other)
        return PLAIN_ACTIVATIONS[self.activation](y) if self.activation else y

    def packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        """The weight in oneDNN's blocked layout for inputs like x (the first ones seen; others work too)."""
        weight, conv = self.conv.weight, self.conv
        key = (weight._version, weight.dtype, weight.data_ptr())
        if self.packed is None or self.packed[0] != key:
            packed = torch._C._nn.mkldnn_reorder_conv2d_weight(weight.detach().to_mkldnn(), list(conv.padding),
                                                               list(conv.stride), list(conv.dilation),
                                                               conv.groups, list(x.shape))
            self.packed = (key, packed)
        return self.packed[1]

    def __getstate__(self):
        state = super().__getstate__()
        state['packed'] = None  # oneDNN's tensors are neither copied nor saved: packed again when needed
        return state


# What fuse_convolutions recognises as an activation or an addition in a traced graph.
ACTIVATION_MODULES = {nn.ReLU: 'relu', nn.ReLU6: 'relu6', nn.Hardswish: 'hardswish', nn.Hardsigmoid: 'hardsigmoid'}
ACTIVATION_FUNCTIONS = {F.relu: 'relu', torch.relu: 'relu', F.relu6: 'relu6', F.hardswish: 'hardswish',
                        F.hardsigmoid: 'hardsigmoid'}
ACTIVATION_METHODS = {'relu': 'relu', 'relu_': 'relu'}
ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
ADD_METHODS = ('add', 'add_')


def activation_of(node: fx.Node, modules: Dict[str, nn.Module]) -> Optional[str]:
    """The name of the activation `node` applies to its single input, or None."""
    if node.op == 'call_module':
        return ACTIVATION_MODULES.get(type(modules[node.target]))
    if node.op == 'call_function' and node.target in ACTIVATION_FUNCTIONS and len(node.args) == 1:
        return ACTIVATION_FUNCTIONS[node.target]
    if node.op == 'call_method' and node.target in ACTIVATION_METHODS and len(node.args) == 1:
        return ACTIVATION_METHODS[node.target]
    return None


def is_addition(node: fx.Node) -> bool:
    """Whether `node` adds its two tensor arguments (no alpha, no scalar)."""
    return (((node.op == 'call_function' and node.target in ADD_FUNCTIONS)
             or (node.op == 'call_method' and node.target in ADD_METHODS))
            and len(node.args) == 2 and not node.kwargs
            and all(isinstance(arg, fx.Node) for arg in node.args))


class Tracer(fx.Tracer):
    """torch.fx's tracer, which also keeps the given module types whole (not traced through)."""

    def __init__(self, leaves: Tuple[type, ...] = ()):
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, module: nn.Module, name: str) -> bool:
        return isinstance(module, self.leaves) or super().is_leaf_module(module, name)


def fuse_convolutions(network: nn.Module, leaves: Tuple[type, ...] = ()) -> fx.GraphModule:
    """`network` traced, with each convolution followed by an activation, an addition, or an addition and
    a ReLU replaced by one `FusedConv2d` (the patterns oneDNN fuses), and the other convolutions by a
    `FusedConv2d` without activation. Identities (folded BatchNorm) are dropped first; modules of the
    types in `leaves` are kept as they are. The result computes the same; it shares the parameters."""
    module = fx.GraphModule(network, Tracer(leaves).trace(network))
    graph = module.graph
    modules = dict(module.named_modules())
    for node in list(graph.nodes):
        if node.op == 'call_module' and isinstance(modules[node.target], nn.Identity):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    calls = module_calls(graph)

    def plain_conv(node) -> bool:
        """A call of a Conv2d called nowhere else, with numeric zero padding."""
        if not (isinstance(node, fx.Node) and node.op == 'call_module'):
            return False
        conv = modules[node.target]
        return (type(conv) is nn.Conv2d and calls[node.target] == 1 and conv.padding_mode == 'zeros'
                and not isinstance(conv.padding, str))

    def fusable(node) -> bool:
        return plain_conv(node) and len(node.users) == 1

    for node in list(graph.nodes):
        if not fusable(node):
            continue
        conv_node, user = node, next(iter(node.users))
        activation, other, last = activation_of(user, modules), None, user
        if activation is None and is_addition(user):
            other = user.args[1] if user.args[0] is conv_node else user.args[0]
            if other is conv_node:
                continue
            follower = next(iter(user.users)) if len(user.users) == 1 else None
            if follower is not None and activation_of(follower, modules) == 'relu':
                activation, last = 'relu', follower
        elif activation is None:
            continue
        name = conv_node.target.replace('.', '_') + '_fused'
        modules[name] = FusedConv2d(modules[conv_node.target], activation)
        module.add_submodule(name, modules[name])
        with graph.inserting_after(last):
            fused = graph.call_module(name, (conv_node.args[0],) if other is None else (conv_node.args[0], other))
        last.replace_all_uses_with(fused)
        for dead in ([last, user] if last is not user else [user]) + [conv_node]:
            graph.erase_node(dead)
    # The remaining convolutions too, for the reordered weight.
    for node in list(graph.nodes):
        if plain_conv(node):
            name = node.target.replace('.', '_') + '_fused'
            module.add_submodule(name, FusedConv2d(modules[node.target]))
            node.target = name
    graph.lint()
    module.recompile()
    module.delete_all_unused_submodules()
    return module

