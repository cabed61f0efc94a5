"""Sphinx directive ``libervia-config-options``: the configuration reference.

It renders every option declared in :mod:`libervia.backend.core.config` (section, key,
default and help), so that the reference can't drift from the code.
"""

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def _default_text(option) -> str:
    if option.default_doc:
        return option.default_doc
    default = option.default
    if default is None:
        return "(none)"
    if isinstance(default, (list, tuple)):
        return "``" + ", ".join(map(str, default)) + "``" if default else "(empty)"
    return f"``{default}``"


class ConfigOptions(SphinxDirective):
    has_content = False

    def run(self) -> list[nodes.Node]:
        # imported here so that modules declaring options are loaded first
        import libervia.backend.app.main  # noqa: F401  (declares through its imports)
        import libervia.backend.core.config as config

        by_section: dict[str, list] = {}
        for option in config.OPTIONS.values():
            by_section.setdefault(option.section, []).append(option)
        lines: list[str] = []
        for section in sorted(by_section, key=lambda s: (s != "DEFAULT", s)):
            lines += [f"``[{section}]``", "-" * (len(section) + 6), ""]
            for option in sorted(by_section[section], key=lambda o: o.key):
                lines += [
                    f"``{option.key}``",
                    f"   {option.help}",
                    "",
                    f"   Default: {_default_text(option)}",
                    "",
                ]
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(
            self.state, StringList(lines, source="libervia-config-options"), container
        )
        return container.children


def setup(app):
    app.add_directive("libervia-config-options", ConfigOptions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
