from .bank import ConceptBank
from .concept import DEFAULT_NUM_LATENT, Concept, identifier, latent_tokens, validate_name
from .io import delete_concept, list_concepts, load_concept, read_meta, save_concept

__all__ = [
    "DEFAULT_NUM_LATENT",
    "Concept",
    "ConceptBank",
    "delete_concept",
    "identifier",
    "latent_tokens",
    "list_concepts",
    "load_concept",
    "read_meta",
    "save_concept",
    "validate_name",
]
