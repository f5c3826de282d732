"""Runtimes: one interface (`base.Runtime` / `base.LoadedModel`), one module per model format."""
