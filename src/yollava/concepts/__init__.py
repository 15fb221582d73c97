from .bank import ConceptBank
from .concept import DEFAULT_NUM_LATENT, Concept, identifier, latent_tokens, validate_name
from .io import concept_from_bytes, delete_concept, list_concepts, load_concept, read_meta, save_concept
from .schema import INJECTIONS, READINGS, VISUAL_TENSORS, check_rows, check_visual, parse_meta, validate_meta
from .unified import UnifiedConcept, can_draw

__all__ = [
    "DEFAULT_NUM_LATENT",
    "INJECTIONS",
    "READINGS",
    "Concept",
    "ConceptBank",
    "UnifiedConcept",
    "VISUAL_TENSORS",
    "can_draw",
    "check_rows",
    "check_visual",
    "concept_from_bytes",
    "delete_concept",
    "identifier",
    "latent_tokens",
    "list_concepts",
    "load_concept",
    "parse_meta",
    "read_meta",
    "save_concept",
    "validate_meta",
    "validate_name",
]
