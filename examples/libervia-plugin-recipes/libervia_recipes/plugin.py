"""Recipes: a pubsub cache analyser with a parser, and a publish trigger."""

from typing import Any

from libervia.backend.core.exceptions import BackendError
from libervia.backend.core.log import getLogger

log = getLogger(__name__)

NS_RECIPE = "urn:example:recipe:0"

PLUGIN_INFO = {
    "name": "Recipes",
    "import_name": "RECIPES",
    "type": "EXP",
    "modes": ["client"],
    "protocols": [],
    # the analyser needs the pubsub cache, which needs pubsub: loaded first
    "dependencies": ["XEP-0060", "PUBSUB_CACHE"],
    "recommendations": [],
    "main": "Recipes",
    "handler": False,
    "description": "Caches and parses cooking recipes published on pubsub nodes.",
}


class InvalidRecipe(BackendError):
    """A recipe can't be published as it is."""


def _children(element: Any, name: str) -> list[Any]:
    return [child for child in element.elements(NS_RECIPE, name)]


def _recipe(item: Any) -> Any:
    return next(item.elements(NS_RECIPE, "recipe"), None)


class Recipes:
    def __init__(self, host: Any) -> None:
        self.host = host
        host.plugins["PUBSUB_CACHE"].register_analyser({
            "name": "recipes",
            "type": "recipe",
            "namespace": NS_RECIPE,
            "order": 100,
            "to_sync": True,
            "parser": self.parse_recipe,
        })
        host.trigger.add("XEP-0060_publish", self._check_before_publishing)
        log.info("recipes plugin ready")

    def parse_recipe(self, client: Any, item: Any, service: Any, node: str
                     ) -> dict[str, Any] | None:
        """What searches need from a recipe: title, ingredients, time in minutes."""
        recipe = _recipe(item)
        if recipe is None:
            return None
        titles = _children(recipe, "title")
        minutes = None
        for time_elt in _children(recipe, "time"):
            try:
                value = int(str(time_elt).strip())
            except ValueError:
                continue
            minutes = value * 60 if time_elt.getAttribute("unit") == "hours" else value
        return {
            "title": str(titles[0]).strip() if titles else None,
            "ingredients": [str(i).strip() for i in _children(recipe, "ingredient")],
            "minutes": minutes,
        }

    def _check_before_publishing(self, client: Any, publication: Any) -> bool:
        """``XEP-0060_publish``: a recipe without title is refused."""
        node = publication.node
        for item in publication.items:
            recipe = _recipe(item)
            if recipe is not None and not any(str(t).strip()
                                              for t in _children(recipe, "title")):
                raise InvalidRecipe(
                    f"a recipe published on {node!r} has no title: add a <title/>"
                )
        return True
