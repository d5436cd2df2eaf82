"""The TrainingJob command line (docs/contracts.md section 1) and gang template."""

from __future__ import annotations

from modelloop_operator.builders.job import Owner, build_job
from modelloop_operator.builders.training import (
    build_torchrun_command,
    build_trainer_flags,
)

from .conftest import training_spec, training_template


def _command(owner: Owner, **spec: object) -> list[str]:
    job = build_job(template=training_template(owner, training_spec(**spec), attempt=2),
                    attempt=2, suspend=False)
    command: list[str] = job["spec"]["template"]["spec"]["containers"][0]["command"]
    return command


class TestTorchrun:
    def test_torchrun_arguments_of_a_two_node_gpu_gang(self, owner: Owner) -> None:
        command = _command(owner, numNodes=2, resources={"gpus": 4})
        assert command[:8] == [
            "torchrun", "--nnodes=2", "--node_rank=$(JOB_COMPLETION_INDEX)",
            "--nproc_per_node=4", "--master_addr=bbc-a2-0.bbc.team-a.svc",
            "--master_port=29500", "-m", "modelloop_trainer.train"]

    def test_one_process_per_node_without_gpus(self, owner: Owner) -> None:
        assert "--nproc_per_node=1" in _command(owner)

    def test_master_port_is_configurable(self) -> None:
        command = build_torchrun_command(num_nodes=1, gpus_per_node=0, master_addr="h",
                                         master_port=1234, module="m", flags=["--x=1"])
        assert command == ["torchrun", "--nnodes=1", "--node_rank=$(JOB_COMPLETION_INDEX)",
                           "--nproc_per_node=1", "--master_addr=h", "--master_port=1234",
                           "-m", "m", "--x=1"]

    def test_image_defaults_to_the_operator_setting_and_can_be_overridden(
            self, owner: Owner) -> None:
        default = training_template(owner, training_spec())
        custom = training_template(owner, training_spec(image="my/trainer:2"))
        assert default.image == "registry.example/trainer:1"
        assert custom.image == "my/trainer:2"


class TestTrainerFlags:
    def test_every_flag_of_a_full_spec(self) -> None:
        spec = training_spec(
            dataset={"uri": "pvc://data/train.csv", "textField": "body", "labelField": "y",
                     "validationUri": "pvc://data/val.csv", "maxSamples": 1500},
            hyperparameters={"epochs": 2, "batchSize": 32, "learningRate": 3e-5,
                             "weightDecay": 0.01, "warmupRatio": 0.06,
                             "gradientAccumulationSteps": 2, "maxLength": 256, "seed": 7,
                             "checkpointEvery": 100},
            evaluation={"metric": "f1_macro", "minScore": 0.9},
            output={"uri": "s3://models/run"})
        assert build_trainer_flags(spec=spec) == [
            "--task=text-classification",
            "--model-uri=builtin://all-minilm-l6-v2",
            "--dataset-uri=pvc://data/train.csv",
            "--text-field=body",
            "--label-field=y",
            "--validation-uri=pvc://data/val.csv",
            "--max-samples=1500",
            "--output-uri=s3://models/run",
            "--epochs=2",
            "--batch-size=32",
            "--learning-rate=3e-05",
            "--weight-decay=0.01",
            "--warmup-ratio=0.06",
            "--gradient-accumulation-steps=2",
            "--max-length=256",
            "--seed=7",
            "--checkpoint-every=100",
            "--metric=f1_macro",
            "--min-score=0.9",
            "--termination-log=/dev/termination-log",
        ]

    def test_validation_split_without_a_validation_file_and_no_gate(self) -> None:
        flags = build_trainer_flags(spec=training_spec(
            dataset={"uri": "builtin://bbc-news", "validationSplit": 0.2}))
        assert "--validation-split=0.2" in flags
        assert not [f for f in flags if f.startswith(("--validation-uri", "--min-score",
                                                      "--max-samples"))]
        assert "--metric=accuracy" in flags

    def test_an_image_task_gets_its_size_and_learning_rate_not_max_length(self) -> None:
        spec = training_spec(task="image-classification",
                             model={"uri": "builtin://efficientnet-lite0"},
                             dataset={"uri": "builtin://digits"})
        flags = build_trainer_flags(spec=spec)
        assert flags[:3] == ["--task=image-classification",
                             "--model-uri=builtin://efficientnet-lite0",
                             "--dataset-uri=builtin://digits"]
        assert "--image-size=32" in flags and "--learning-rate=0.002" in flags
        assert not [f for f in flags if f.startswith("--max-length")]
        sized = training_spec(task="image-classification", dataset={"uri": "file:///d/x.jsonl"},
                              model={"uri": "pvc://models/vision/v1"},
                              hyperparameters={"imageSize": 64, "learningRate": 1e-3})
        assert {"--image-size=64", "--learning-rate=0.001"} <= set(
            build_trainer_flags(spec=sized))

    def test_text_keeps_its_defaults_when_the_learning_rate_is_left_out(self) -> None:
        flags = build_trainer_flags(spec=training_spec())
        assert {"--learning-rate=5e-05", "--max-length=128"} <= set(flags)
        assert not [f for f in flags if f.startswith("--image-size")]

    def test_flags_use_the_contracts_kebab_case(self) -> None:
        for flag in build_trainer_flags(spec=training_spec()):
            name = flag.split("=", 1)[0]
            assert name.startswith("--") and name == name.lower() and "_" not in name
