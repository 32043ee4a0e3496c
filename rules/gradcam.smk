# Grad-CAM panels, heatmaps and per-class focus scores of chosen runs (default: the poster's model).


rule gradcam:
    """Grad-CAM of a run's test images: a panel per class, heatmaps and per-class focus scores."""
    input:
        model="results/runs/{run}/model.keras",
        predictions="results/runs/{run}/predictions.npz",
        data=run_data,
    output:
        panel=report(
            "results/gradcam/{run}/panel.png",
            caption="../paper/captions/gradcam.rst",
            category="Grad-CAM",
            labels={"run": "{run}"},
        ),
        pdf="results/gradcam/{run}/panel.pdf",
        heatmaps="results/gradcam/{run}/heatmaps.npz",
        focus="results/gradcam/{run}/focus.csv",
    log:
        "logs/gradcam/{run}.log",
    benchmark:
        "benchmarks/gradcam/{run}.tsv"
    # The longest job after training: before the evaluations it does not wait on, and the quick plots.
    priority: 6
    conda:
        "../envs/tensorflow.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=1,
    params:
        dataset=run_dataset_config,
        layer=config["gradcam"]["layer"],
        per_class_correct=config["gradcam"]["per_class_correct"],
        per_class_mistakes=config["gradcam"]["per_class_mistakes"],
        batch_size=config["gradcam"]["batch_size"],
        disc_radius=config["gradcam"]["disc_radius"],
        require_gpu=config["training"]["require_gpu"],
    script:
        "../scripts/gradcam.py"
