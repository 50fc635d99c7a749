"""The fp16 export model with fp32 islands, for TensorRT's strongly typed builds.

TensorRT builds exactly the precision the graph states, so the graph itself
is fp16, with explicit casts around the parts that overflow or lose too much
in half precision (see DESIGN.md):

- every LayerNorm (statistics over up to 1024 channels);
- Swin's window attention from q.k^T through softmax and attn.v;
- the decoder's SelfAttention bmm's and softmax (sums over H*C/8 terms);
- SICA's class-context bmm (a sum over up to H*W positions, unnormalised),
  its key/value convolutions on that context, the similarity softmax and the
  refined-feature bmm;
- the saliency maps: ImagePyramid reconstruction, the final sigmoid and the
  per-sample min/max normalisation.

Everything else (convolutions, linear layers, GELU, BatchNorm, resizes) runs
in fp16. Input and output stay fp32 so the serving side is unchanged.

The islands are subclasses of transparent-background's own modules swapped
onto the instances (``module.__class__``), so parameter names stay the same
and the fp32 model in the same process is untouched.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.export.model import PerSampleMask, build_network, normalise_per_sample

HALF = torch.float16
FLOAT = torch.float32

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from transparent_background.backbones.SwinTransformer import WindowAttention
    from transparent_background.modules.attention_module import SICA
    from transparent_background.modules.layers import ImagePyramid, SelfAttention


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (weights kept fp32), result cast back to the input's dtype."""

    fp32_parameters = ("weight", "bias")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(x.to(FLOAT), self.normalized_shape, self.weight, self.bias, self.eps)
        return out.to(x.dtype)


class MixedWindowAttention(WindowAttention):
    """Swin window attention: qkv and output projections in fp16, the attention itself in fp32."""

    fp32_parameters = ("relative_position_bias_table",)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0].to(FLOAT), qkv[1].to(FLOAT), qkv[2].to(FLOAT)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
            self.window_size[0] * self.window_size[1], self.window_size[0] * self.window_size[1], -1
        )
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.to(FLOAT).unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = torch.softmax(attn, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj(out.to(x.dtype))


class MixedSelfAttention(SelfAttention):
    """The decoder's axial self-attention: projections in fp16, bmm's and softmax in fp32."""

    fp32_parameters = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_size, channel, height, width = x.size()
        axis = 1
        if "h" in self.mode:
            axis *= height
        if "w" in self.mode:
            axis *= width
        view = (batch_size, -1, axis)
        query = self.query_conv(x).view(*view).permute(0, 2, 1).to(FLOAT)
        key = self.key_conv(x).view(*view).to(FLOAT)
        attention = torch.softmax(torch.bmm(query, key), dim=-1)
        value = self.value_conv(x).view(*view).to(FLOAT)
        out = torch.bmm(value, attention.permute(0, 2, 1)).view(batch_size, channel, height, width)
        return self.gamma * out.to(x.dtype) + x


class MixedSICA(SICA):
    """SICA with the class probabilities, the context and the similarity in fp32.

    Takes fp16 features and fp32 saliency/laplacian logits; returns fp16
    features and fp32 laplacian logits.
    """

    fp32_parameters = ("threshold", "lthreshold")
    fp32_children = ("conv_key", "conv_value")

    def forward(self, x: torch.Tensor, smap: torch.Tensor, lmap: torch.Tensor | None = None):
        b, c, h, w = x.shape
        prob = self._class_probabilities(x.shape[-2:], smap.to(FLOAT), lmap)
        shape = self.stage_size if self.stage_size is not None else (h, w)
        positions = shape[0] * shape[1]
        f = F.interpolate(x, size=shape, mode="bilinear", align_corners=False).view(b, positions, -1).to(FLOAT)
        prob = F.interpolate(prob, size=shape, mode="bilinear", align_corners=False).view(b, self.ctx, positions)
        context = torch.bmm(prob, f).permute(0, 2, 1).unsqueeze(3)

        query = self.conv_query(x).view(b, self.depth, -1).permute(0, 2, 1).to(FLOAT)
        key = self.conv_key(context).view(b, self.depth, -1)
        value = self.conv_value(context).view(b, self.depth, -1).permute(0, 2, 1)
        sim = torch.softmax((self.depth**-0.5) * torch.bmm(query, key), dim=-1)
        context = torch.bmm(sim, value).permute(0, 2, 1).contiguous().view(b, -1, h, w).to(x.dtype)

        context = self.conv_out1(context)
        x = self.conv_out3(self.conv_out2(torch.cat([x, context], dim=1)))
        return x, self.conv_out4(x).to(FLOAT)

    def _class_probabilities(self, size, smap: torch.Tensor, lmap: torch.Tensor | None) -> torch.Tensor:
        p = torch.sigmoid(F.interpolate(smap, size=size, mode="bilinear", align_corners=False)) - self.threshold
        prob = [torch.clip(p, 0, 1), torch.clip(-p, 0, 1), self.threshold - torch.abs(p)]
        if self.lmap_in and lmap is not None:
            lp = torch.sigmoid(F.interpolate(lmap.to(FLOAT), size=size, mode="bilinear", align_corners=False))
            lp = lp - self.lthreshold
            prob += [torch.clip(lp, 0, 1), torch.clip(-lp, 0, 1)]
        return torch.cat(prob, dim=1)


class Fp32ImagePyramid(ImagePyramid):
    """Laplacian pyramid reconstruction of the saliency logits in fp32 (its kernel is fp32 anyway)."""

    def reconstruct(self, x: torch.Tensor, laplacian_x: torch.Tensor) -> torch.Tensor:
        return super().reconstruct(x.to(FLOAT), laplacian_x.to(FLOAT))


ISLANDS = {
    nn.LayerNorm: Fp32LayerNorm,
    WindowAttention: MixedWindowAttention,
    SelfAttention: MixedSelfAttention,
    SICA: MixedSICA,
}


class Fp16Mask(PerSampleMask):
    """image (N, 3, H, W) float32 -> mask (N, 1, H, W) float32, computed in fp16 with fp32 islands."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.network.forward_inspyre(image.to(HALF))["saliency"][-1]
        return normalise_per_sample(torch.sigmoid(logits.to(FLOAT)))


def to_mixed_precision(network: nn.Module) -> nn.Module:
    """Turn an fp32 InSPyReNet (in place) into fp16 with fp32 islands; returns it.

    The islands' own tensors are saved before the cast and put back after it:
    casting them down and up again would lose precision, and BatchNorm
    variances of SICA's context (sums over many positions) overflow fp16.
    """
    kept: list[tuple[nn.Module, str]] = []
    for module in network.modules():
        island = ISLANDS.get(type(module))
        if island is None:
            continue
        module.__class__ = island
        kept += [(module, name) for name in island.fp32_parameters if getattr(module, name, None) is not None]
        for child in getattr(island, "fp32_children", ()):
            for sub in getattr(module, child).modules():
                kept += [(sub, name) for name, _ in sub.named_parameters(recurse=False)]
                kept += [(sub, name) for name, _ in sub.named_buffers(recurse=False)]
    network.image_pyramid.__class__ = Fp32ImagePyramid
    saved = [(module, name, getattr(module, name).detach().clone()) for module, name in kept]
    network.half()
    for module, name, tensor in saved:
        getattr(module, name).data = tensor
    return network


def fp32_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers an fp16 model keeps in fp32 (its islands' weights)."""
    named = [*model.named_parameters(), *model.named_buffers()]
    return sorted(name for name, tensor in named if tensor.dtype == FLOAT)


def mixed_precision_model(state_dict: dict[str, torch.Tensor], size: tuple[int, int]) -> Fp16Mask:
    """The eval-mode fp16-with-fp32-islands export model with ``state_dict`` loaded strictly."""
    network = build_network(size)
    network.load_state_dict(state_dict, strict=True)
    return Fp16Mask(to_mixed_precision(network)).eval()


def export_program(model: nn.Module, example: torch.Tensor, max_batch: int) -> torch.export.ExportedProgram:
    """torch.export the model with a dynamic batch of 1..max_batch (CPU or CUDA alike)."""
    if max_batch == 1:
        with torch.no_grad():
            return torch.export.export(model, (example[:1],))
    # A batch of one would let export specialise the batch dimension to 1.
    example = example[:1].expand(2, *example.shape[1:]).contiguous()
    dims = {"image": {0: torch.export.Dim("batch", min=1, max=max_batch)}}
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=dims)


def dtypes_by_op(program: torch.export.ExportedProgram) -> dict[str, set[str]]:
    """For each aten op in the exported graph, the dtypes of its outputs (what TensorRT will build)."""
    found: dict[str, set[str]] = {}
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        value = node.meta.get("val")
        values = value if isinstance(value, (tuple, list)) else [value]
        dtypes = {str(v.dtype).removeprefix("torch.") for v in values if isinstance(v, torch.Tensor)}
        if dtypes:
            name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
            found.setdefault(name, set()).update(dtypes)
    return found


def implicit_promotions(program: torch.export.ExportedProgram) -> list[str]:
    """Ops that mix fp16 and fp32 tensor inputs (type promotion a strongly typed build would reject)."""
    mixed = []
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        dtypes = {
            arg.meta["val"].dtype
            for arg in node.all_input_nodes
            if isinstance(arg.meta.get("val"), torch.Tensor) and arg.meta["val"].is_floating_point()
        }
        if HALF in dtypes and FLOAT in dtypes:
            mixed.append(f"{node.name} ({node.target})")
    return mixed
