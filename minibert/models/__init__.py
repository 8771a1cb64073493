"""Models built from the modules in ``minibert.nn``."""
from minibert.models.bert import BertModel, BertModelOutput

__all__ = ["BertModel", "BertModelOutput"]
