"""An exporter wrapper for the end-to-end scripts: it remembers whether any export failed."""


class Checked:
    """Wraps an exporter and counts the exports that did not succeed."""

    def __init__(self, inner):
        self.inner = inner
        self.failures = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def export(self, batch, *args, **kwargs):
        result = self.inner.export(batch, *args, **kwargs)
        if getattr(result, "name", "SUCCESS") != "SUCCESS":
            self.failures += 1
        return result
