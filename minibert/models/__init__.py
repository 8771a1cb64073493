"""Models built from the modules in ``minibert.nn``."""
from minibert.models.bert import BertModel, BertModelOutput
from minibert.models.classification import BertForSequenceClassification, SequenceClassifierOutput
from minibert.models.pretraining import BertForPreTraining, BertForPreTrainingOutput

__all__ = ["BertModel", "BertModelOutput", "BertForPreTraining", "BertForPreTrainingOutput",
           "BertForSequenceClassification", "SequenceClassifierOutput"]
