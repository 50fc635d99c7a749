"""TensorRT's rules without a GPU: which plan runs where, the engine's precision gate, the builder's settings."""

from __future__ import annotations

import pytest

from tests.harness import FAST_SIZE, L4_ENGINE_TARGET

L4 = L4_ENGINE_TARGET


EMBEDDED = {**L4, "lean_runtime_excluded": False}  # version-compatible, lean runtime inside the plan


def machine(runtime="tensorrt_lean", version="11.1.0.106", cc=(8, 9), name="NVIDIA L4"):
    from serving.backends.tensorrt_target import Machine

    return Machine(runtime, version, cc, name)


@pytest.mark.parametrize(
    ("target", "here", "words"),
    [
        (L4, machine(), None),
        (L4, machine(cc=None), "no CUDA GPU"),
        # Hardware: level none = that GPU model only; same-compute-capability; ampere+.
        (L4, machine(cc=(9, 0), name="NVIDIA H200"), "built for compute capability 8.9"),
        (L4, machine(cc=(8, 0), name="NVIDIA A100"), "--hardware-compatible"),
        (L4, machine(cc=(8, 9), name="NVIDIA RTX 4090"), "that GPU model only"),
        ({**L4, "hardware_compatibility": "same-compute-capability"}, machine(cc=(8, 9), name="NVIDIA RTX 4090"), None),
        (
            {**L4, "hardware_compatibility": "same-compute-capability"},
            machine(cc=(8, 6), name="NVIDIA A10"),
            "built for compute capability 8.9",
        ),
        ({**L4, "hardware_compatibility": "ampere+"}, machine(cc=(9, 0)), None),
        ({**L4, "hardware_compatibility": "ampere+"}, machine(cc=(8, 0)), None),
        ({**L4, "hardware_compatibility": "ampere+"}, machine(cc=(7, 5), name="Tesla T4"), "Ampere and newer"),
        # Version-compatible, lean runtime excluded (this project's builds): exactly the same version.
        (L4, machine(version="11.4.0.106"), "needs a lean runtime of TensorRT 11.1.0.106"),
        (L4, machine(version="11.1.0.107"), "needs a lean runtime of TensorRT 11.1.0.106"),
        (L4, machine(version="11.0.0.114"), "needs a lean runtime"),
        # The full runtime alone would call such a plan corrupt: one line naming what to install.
        (L4, machine(runtime="tensorrt"), "install tensorrt-lean-cu12==11.1.0.106"),
        # Cloud Run's RTX PRO 6000 Blackwell (compute capability 12.0): an L4 plan is refused, the bundle
        # falls back as on any GPU without an engine.
        (
            L4,
            machine(cc=(12, 0), name="NVIDIA RTX PRO 6000 Blackwell Server Edition"),
            "built for compute capability 8.9",
        ),
        (
            {key: v for key, v in L4.items() if key != "lean_runtime_excluded"},
            machine(version="11.4.0.106"),
            "needs a lean runtime",
        ),  # older manifests: their plans excluded the lean runtime
        # Version-compatible, lean runtime embedded: same or later, same or next major, never older.
        (EMBEDDED, machine(version="11.4.0.106"), None),
        ({**EMBEDDED, "tensorrt_version": "10.16.1.11"}, machine(), None),  # TensorRT documents 10 -> 11
        (EMBEDDED, machine(version="11.0.0.114"), "is older"),
        ({**EMBEDDED, "tensorrt_version": "8.6.1.6"}, machine(), "TensorRT 8 engine cannot run on a TensorRT 11"),
        # Not version-compatible: the full runtime of exactly the same four-part version.
        ({**L4, "version_compatible": False}, machine(), "lean runtime only loads version-compatible"),
        ({**L4, "version_compatible": False}, machine(runtime="tensorrt"), None),
        (
            {**L4, "version_compatible": False},
            machine(runtime="tensorrt", version="11.1.0.107"),
            "not version-compatible",
        ),
        (
            {**L4, "version_compatible": False},
            machine(runtime="tensorrt", version="11.4.0.106"),
            "not version-compatible",
        ),
        ({**L4, "hardware_compatibility": "turing+"}, machine(), "unknown hardware compatibility level"),
        ({"tensorrt_version": "11.1"}, machine(), "incomplete or malformed"),
        ({}, machine(), "incomplete or malformed"),
    ],
)
def test_compatibility_table(target, here, words):
    from serving.backends.tensorrt_target import target_problem

    reason = target_problem(target, here)
    if words is None:
        assert reason is None
    else:
        assert reason is not None, reason
        assert words in reason, reason


def inspector(layers):
    return {"Layers": layers, "I/O Tensors": [{"Name": "image"}, {"Name": "mask"}]}


def layer(kind, inputs, outputs=None, weights=None, key="Format/Datatype"):
    """An inspector layer entry: TensorRT 10.x writes 'Format/Datatype', 11.x a separate 'DataType'."""
    entry = {
        "Name": "l",
        "LayerType": kind,
        "Inputs": [{key: t} for t in inputs],
        "Outputs": [{key: t} for t in (outputs or inputs)],
    }
    if weights:
        entry["Weights"] = {"Type": weights, "Count": 9}
    return entry


FP16 = "Channel major FP16 format where channel % 8 == 0"


FP32 = "Row major linear FP32"


def realistic_engine(fp16_convs: int, fp32_convs: int, key="Format/Datatype", half=FP16, single=FP32):
    """InSPyReNet's shape: about half the fp16 convolutions feed an fp32 island through a fused cast."""
    fused = fp16_convs // 2
    layers = [layer("CaskConvolution", [half], [half], "Half", key)] * (fp16_convs - fused)
    layers += [layer("CaskConvolution", [half], [single], "Half", key)] * fused  # fused cast: fp32 out
    layers += [layer("CaskConvolution", [single], [single], "Float", key)] * fp32_convs  # SICA islands
    layers += [
        layer("Reformat", [half], [single], key=key),
        layer("Cast", [single], [half], key=key),
        layer("Myelin", [half, single], [single], key=key),
        layer("NoOp", ["N/A due to dynamic shapes"]),
    ]
    return inspector(layers)


def test_correct_engine_passes_with_fused_casts():
    from pipeline.export.tensorrt_inspection import fp16_problem, precision_summary

    summary = precision_summary(realistic_engine(195, 15))
    assert summary["convolutions"] == {"fp16": 195, "fp32": 15}
    assert fp16_problem(summary) is None


def test_correct_engine_passes_in_tensorrt_11_inspector_format():
    from pipeline.export.tensorrt_inspection import fp16_problem, precision_summary

    summary = precision_summary(realistic_engine(195, 15, key="DataType", half="Half", single="Float"))
    assert summary["convolutions"] == {"fp16": 195, "fp32": 15}
    assert fp16_problem(summary) is None


def test_output_precision_alone_would_have_failed_the_correct_engine():
    """The old gate (counting convolution outputs) read this correct engine as 53% fp16."""
    from pipeline.export.tensorrt_inspection import tensor_precision

    layers = realistic_engine(195, 15)["Layers"]
    convs = [entry for entry in layers if entry["LayerType"] == "CaskConvolution"]
    share = sum(tensor_precision(entry["Outputs"][0]) == "fp16" for entry in convs) / len(convs)
    assert share < 0.75


def test_all_fp32_engine_fails():
    from pipeline.export.tensorrt_inspection import fp16_problem, precision_summary

    problem = fp16_problem(precision_summary(realistic_engine(0, 210)))
    assert problem
    assert "fell back to fp32" in problem
    assert "0%" in problem
    problem = fp16_problem(precision_summary(realistic_engine(0, 210, key="DataType", half="Half", single="Float")))
    assert problem
    assert "fell back to fp32" in problem


def test_convolution_without_input_types_is_judged_by_its_weights():
    from pipeline.export.tensorrt_inspection import layer_precision

    assert (
        layer_precision({"LayerType": "CaskConvolution", "Inputs": [{}], "Weights": {"Type": "Half"}}, True) == "fp16"
    )
    assert layer_precision({"LayerType": "CaskConvolution", "Weights": {"Type": "Float"}}, True) == "fp32"


def test_engine_without_detailed_layer_information_fails():
    from pipeline.export.tensorrt_inspection import fp16_problem, precision_summary

    problem = fp16_problem(precision_summary(inspector(["layer a", "layer b"])))
    assert problem
    assert "no layer precisions" in problem


# The fast bundle's model.fp16.onnx: its weights as stored (mostly fp16) and as they would be in fp32.
WEIGHTS = {"bytes": 182_369_786, "fp32_bytes": 363_139_896}
FP16_PLAN = 197_000_000  # the fp16 weights and the engine's own bytes
FP32_PLAN = 371_000_000  # weights kept in fp32


def fused_engine():
    """A few large Myelin regions, as TensorRT fuses a Swin graph: their inputs are the fp32 image or an fp32
    island's output and their outputs fp32, so the fp16 inside never shows in the listing."""
    regions = [layer("Myelin", ["Float"], ["Float"], key="DataType") for _ in range(4)]
    return inspector([*regions, layer("Reformat", ["Float"], ["Half"], key="DataType")])


@pytest.mark.parametrize(
    ("engine", "plan", "passes"),
    [
        (realistic_engine(195, 15), FP16_PLAN, True),  # many small layers
        (fused_engine(), FP16_PLAN, True),  # fused regions: before, "fell back to fp32"
        (realistic_engine(195, 15), FP32_PLAN, True),  # the listing shows fp16: fusion never invents it
        (realistic_engine(0, 210), FP32_PLAN, False),  # planted all-fp32, many layers
        (fused_engine(), FP32_PLAN, False),  # planted all-fp32, fused
        (inspector(["layer a", "layer b"]), FP32_PLAN, False),  # no detail, fp32 weights
        (inspector(["layer a", "layer b"]), FP16_PLAN, True),  # no detail, fp16 weights
    ],
)
def test_the_fp16_gate_reads_fused_regions_by_the_plans_size(engine, plan, passes):
    from pipeline.export.tensorrt_inspection import fp16_problem, precision_summary

    problem = fp16_problem(precision_summary(engine), WEIGHTS, plan)
    assert (problem is None) == passes, problem
    if not passes:
        assert problem.startswith("the plan is 371 MB, the size of its weights in fp32 (363 MB; 182 MB")


def test_without_recorded_weights_the_listing_decides_alone():
    from pipeline.export.tensorrt_inspection import fp16_problem, precision_summary, size_evidence

    assert "fell back" in fp16_problem(precision_summary(fused_engine()), None, FP16_PLAN)
    assert fp16_problem(precision_summary(realistic_engine(195, 15)), None, FP16_PLAN) is None
    assert size_evidence(None, FP16_PLAN) is None
    assert size_evidence(WEIGHTS, FP16_PLAN)["plan_vs_fp32_weights"] == 0.542


def test_engine_of_myelin_regions_is_judged_on_their_inputs():
    from pipeline.export.tensorrt_inspection import fp16_problem, precision_summary

    regions = [layer("Myelin", ["Half", "Float"], ["Float"], key="DataType")] * 3
    assert fp16_problem(precision_summary(inspector(regions + [layer("kgen", ["Float"])]))) is None
    assert "fell back" in fp16_problem(precision_summary(inspector([layer("Myelin", ["Float"])] * 3)))


def test_datatype_names_bf16_before_float():
    from pipeline.export.tensorrt_inspection import datatype, tensor_dtype

    assert datatype("BFloat16") == "bf16"
    assert datatype("Half") == "fp16"
    assert datatype("Float") == "fp32"
    assert datatype("Row major linear BF16 format (kLINEAR)") == "bf16"
    assert tensor_dtype("DataType.BF16") == "bfloat16"
    assert tensor_dtype("DataType.FLOAT") == "float32"


def test_builder_settings_ask_for_the_l4_route():
    from pipeline.export.tensorrt_engine import TensorRTOptions, builder_settings

    settings = builder_settings(TensorRTOptions(max_batch=4), FAST_SIZE)
    assert {"VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"} <= set(settings["set_flags"])
    assert settings["cleared_flags"] == ["TF32"]
    assert settings["profiling_verbosity"] == "DETAILED"
    assert settings["profile"]["image"] == {"min": [1, 3, 384, 384], "opt": [1, 3, 384, 384], "max": [4, 3, 384, 384]}
    assert settings["hardware_compatibility_level"] == "NONE"
    assert (
        builder_settings(TensorRTOptions(hardware_compatible=True), FAST_SIZE)["hardware_compatibility_level"]
        == "AMPERE_PLUS"
    )


def test_engine_io_contract():
    from pipeline.export.tensorrt_inspection import io_problem

    good = {
        "input": {"name": "image", "dtype": "float32", "min_shape": [1, 3, 384, 384], "max_shape": [4, 3, 384, 384]},
        "output": {"name": "mask", "dtype": "float32"},
    }
    assert io_problem(good, FAST_SIZE, 4) is None
    assert "output name" in io_problem({**good, "output": {"name": "output0", "dtype": "float32"}}, FAST_SIZE, 4)
    assert "output dtype" in io_problem({**good, "output": {"name": "mask", "dtype": "float16"}}, FAST_SIZE, 4)
    assert "max_shape" in io_problem(good, FAST_SIZE, 8)


def test_engine_file_names():
    from pipeline.export.tensorrt_engine import engine_file

    assert engine_file("NVIDIA L4", False) == "model.nvidia-l4.fp16.plan"
    assert engine_file("NVIDIA L4", True) == "model.ampere-plus.fp16.plan"


def test_graph_check_finds_a_node_that_mixes_precisions(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from pipeline.export.onnx_fp16 import graph_problem, graph_types

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["image"], ["half"], to=TensorProto.FLOAT16),
            helper.make_node("Add", ["half", "image"], ["sum"], name="add"),
            helper.make_node("Cast", ["sum"], ["mask"], to=TensorProto.FLOAT),
        ],
        "mixed",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 3, 4, 4])],
        value_info=[helper.make_tensor_value_info("half", TensorProto.FLOAT16, [1, 3, 4, 4])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "mixed.onnx")
    report = graph_types(tmp_path / "mixed.onnx")
    assert report["mixed_precision_nodes"] == ["Add add"]
    assert "mix fp16 and fp32" in graph_problem(report)


@pytest.mark.parametrize("used", [[], None])
def test_a_graph_that_needs_no_plugin_library_builds(used):
    from types import SimpleNamespace

    from pipeline.export.tensorrt_engine import refuse_plugin_libraries

    refuse_plugin_libraries(SimpleNamespace(get_used_vc_plugin_libraries=lambda: used))


def test_plugin_libraries_a_version_compatible_plan_would_not_carry_fail_the_build():
    from types import SimpleNamespace

    from pipeline.errors import BuildError
    from pipeline.export.tensorrt_engine import TensorRTOptions, builder_settings, refuse_plugin_libraries

    assert "VERSION_COMPATIBLE" in builder_settings(TensorRTOptions(), FAST_SIZE)["set_flags"]  # the case that checks
    parser = SimpleNamespace(get_used_vc_plugin_libraries=lambda: ["libnvinfer_vc_plugin.so.11"])
    with pytest.raises(BuildError, match="plugin libraries .*: libnvinfer_vc_plugin.so.11$"):
        refuse_plugin_libraries(parser)
