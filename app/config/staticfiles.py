"""Static files storage for production: hashed names, ES module imports included."""

from __future__ import annotations

from django.contrib.staticfiles.storage import ManifestStaticFilesStorage


class ManifestStorage(ManifestStaticFilesStorage):
    """Also rewrites `import … from "./x.js";` to the hashed file.

    A page names only its entry module (room.<hash>.js); without this its relative imports
    would load the unhashed room/*.js, which a deploy replaces while the old page and its
    year-long cached entry live on: one page mixing two releases. With it, each release's
    module graph is immutable, and an entry's hash changes with any module it imports.
    The import graph must be acyclic (Django resolves hashes in a few passes).
    """

    support_js_module_import_aggregation = True
