"""CineLoRA: LoRA fine-tuning of Wan2.1 I2V-14B for cinematic scenes, with adversarial R-LPIPS training and
cross-domain evaluation. One library; experiments/ holds frozen configs, results/ what runs wrote."""

__version__ = "0.1.0"
