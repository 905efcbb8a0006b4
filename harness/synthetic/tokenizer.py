"""Offline tokenizers for the tiny checkpoints, trained in milliseconds on an embedded corpus.

Every tokenizer here is the real tokenizer class of its model family (LlamaTokenizer, GemmaTokenizer,
T5Tokenizer, and BertTokenizer for the Q-Former), fed with a vocabulary trained by the `tokenizers`
library. Any text tokenizes: the BPE vocabularies fall back to byte tokens (`<0x00>`..`<0xFF>`, laid
out as in SentencePiece vocabularies) and the unigram and WordPiece ones map unknown text to unk.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import BertTokenizer, GemmaTokenizer, LlamaTokenizer, T5Tokenizer

if TYPE_CHECKING:  # transformers 5 only; the trainers above also serve older releases (remote-code stand-ins)
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

# Prompt-shaped English in the domains the harness evaluates, so common words become single tokens.
CORPUS = """\
What species of bird is shown in this image? Answer with the name of the species.
Which type of aircraft is in the picture? Answer with the manufacturer and the model.
What is the make, model and year of the car in this photo? Answer with a short phrase.
Which flower is this? Which breed of dog is this? Which breed of cat is this?
Choose the correct option from the list below and answer with the letter only.
Question: What is the fine-grained category of the object in the image? Answer:
The answer is: A, B, C, D, E. Options: (A) (B) (C) (D) (E) Yes or no? The photo shows a
Black-footed Albatross, Laysan Albatross, Sooty Albatross, Groove-billed Ani, Crested Auklet,
Least Auklet, Parakeet Auklet, Red-winged Blackbird, Rusty Blackbird, Yellow-headed Blackbird,
Bobolink, Indigo Bunting, Lazuli Bunting, Painted Bunting, Cardinal, Spotted Catbird, Gray Catbird,
Yellow-breasted Chat, Eastern Towhee, Chuck-will's-widow, Brandt Cormorant, Red-faced Cormorant,
American Crow, Fish Crow, Black-billed Cuckoo, Mangrove Cuckoo, Yellow-billed Cuckoo, Gray-crowned
Rosy-Finch, Purple Finch, Northern Flicker, Acadian Flycatcher, Great Crested Flycatcher,
Frigatebird, Northern Fulmar, Gadwall, American Goldfinch, European Goldfinch, Boat-tailed Grackle,
Eared Grebe, Horned Grebe, Pied-billed Grebe, Western Grebe, Blue Grosbeak, Evening Grosbeak,
Pigeon Guillemot, California Gull, Glaucous-winged Gull, Heermann Gull, Herring Gull, Ivory Gull,
Ruby-throated Hummingbird, Rufous Hummingbird, Green Violetear, Long-tailed Jaeger, Blue Jay,
Florida Jay, Green Jay, Dark-eyed Junco, Tropical Kingbird, Gray Kingbird, Belted Kingfisher,
Pied Kingfisher, Ringed Kingfisher, Red-legged Kittiwake, Horned Lark, Mallard, Western Meadowlark,
Hooded Merganser, Mockingbird, Nighthawk, Clark Nutcracker, White-breasted Nuthatch, Baltimore
Oriole, Hooded Oriole, Scott Oriole, Ovenbird, Brown Pelican, White Pelican, Western Wood-Pewee,
Sayornis, American Pipit, Whip-poor-Will, Horned Puffin, Common Raven, White-necked Raven,
American Redstart, Geococcyx, Loggerhead Shrike, Great Grey Shrike, Baird Sparrow, Chipping
Sparrow, Field Sparrow, Fox Sparrow, House Sparrow, Song Sparrow, Tree Sparrow, White-throated
Sparrow, Cape Glossy Starling, Bank Swallow, Barn Swallow, Cliff Swallow, Tree Swallow, Scarlet
Tanager, Summer Tanager, Artic Tern, Black Tern, Caspian Tern, Common Tern, Elegant Tern, Forsters
Tern, Least Tern, Green-tailed Towhee, Brown Thrasher, Sage Thrasher, Black-capped Vireo, Blue-headed
Vireo, Philadelphia Vireo, Red-eyed Vireo, Warbling Vireo, White-eyed Vireo, Yellow-throated Vireo,
Bay-breasted Warbler, Black-and-white Warbler, Blue-winged Warbler, Canada Warbler, Cape May Warbler,
Cerulean Warbler, Golden-winged Warbler, Hooded Warbler, Kentucky Warbler, Magnolia Warbler,
Mourning Warbler, Myrtle Warbler, Nashville Warbler, Orange-crowned Warbler, Palm Warbler, Pine
Warbler, Prairie Warbler, Prothonotary Warbler, Swainson Warbler, Tennessee Warbler, Wilson Warbler,
Worm-eating Warbler, Yellow Warbler, Northern Waterthrush, Louisiana Waterthrush, Bohemian Waxwing,
Cedar Waxwing, American Three-toed Woodpecker, Pileated Woodpecker, Red-bellied Woodpecker,
Red-cockaded Woodpecker, Red-headed Woodpecker, Downy Woodpecker, Bewick Wren, Cactus Wren,
Carolina Wren, House Wren, Marsh Wren, Rock Wren, Winter Wren, Common Yellowthroat.
Boeing 707-320, Boeing 727-200, Boeing 737-300, Boeing 737-800, Boeing 747-400, Boeing 757-200,
Boeing 767-300, Boeing 777-200, Airbus A300B4, Airbus A310, Airbus A319, Airbus A320, Airbus A321,
Airbus A330-200, Airbus A340-600, Airbus A380, ATR-42, ATR-72, BAE 146-200, Beechcraft 1900,
Cessna 172, Cessna 560, Challenger 600, DC-10, DC-3, DC-8, DC-9-30, Dash 8, DHC-6, Dornier 328,
Embraer E-190, ERJ 145, Falcon 2000, Fokker 100, Gulfstream IV, Hawk T1, Il-76, L-1011, MD-11, MD-80,
Metroliner, Saab 340, Spitfire, Tornado, Tu-134, Yak-42, Lockheed Martin F-16A/B, Eurofighter Typhoon.
2012 Audi TT Coupe, 2007 BMW X5 SUV, 2012 Chevrolet Silverado 1500 Extended Cab, 1993 Geo Metro
Convertible, 2012 Honda Accord Sedan, 2012 Hyundai Sonata Hybrid Sedan, 2009 Dodge Ram Pickup 3500,
2012 Ford F-150 Regular Cab, 2012 Tesla Model S Sedan, 2012 Toyota Camry Sedan, 2010 Volvo XC90 SUV,
2012 Jeep Wrangler SUV, 2012 Lamborghini Aventador Coupe, 2012 Porsche Panamera Sedan Hatchback.
pink primrose, hard-leaved pocket orchid, canterbury bells, sweet pea, english marigold, tiger lily,
moon orchid, bird of paradise, monkshood, globe thistle, snapdragon, colt's foot, king protea,
spear thistle, yellow iris, globe-flower, purple coneflower, peruvian lily, balloon flower, giant
white arum lily, fire lily, pincushion flower, fritillary, red ginger, grape hyacinth, corn poppy,
prince of wales feathers, stemless gentian, artichoke, sweet william, carnation, garden phlox, love
in the mist, mexican aster, alpine sea holly, ruby-lipped cattleya, cape flower, great masterwort,
siam tulip, lenten rose, barbeton daisy, daffodil, sword lily, poinsettia, bolero deep blue,
wallflower, marigold, buttercup, oxeye daisy, common dandelion, petunia, wild pansy, primula,
sunflower, pelargonium, bishop of llandaff, gaura, geranium, orange dahlia, pink-yellow dahlia,
cautleya spicata, japanese anemone, black-eyed susan, silverbush, californian poppy, osteospermum,
spring crocus, bearded iris, windflower, tree poppy, gazania, azalea, water lily, rose, thorn apple,
morning glory, passion flower, lotus, toad lily, anthurium, frangipani, clematis, hibiscus, columbine,
desert-rose, tree mallow, magnolia, cyclamen, watercress, canna lily, hippeastrum, bee balm, ball moss,
foxglove, bougainvillea, camellia, mallow, mexican petunia, bromelia, blanket flower, trumpet creeper.
Abyssinian, Bengal, Birman, Bombay, British Shorthair, Egyptian Mau, Maine Coon, Persian, Ragdoll,
Russian Blue, Siamese, Sphynx, american bulldog, american pit bull terrier, basset hound, beagle,
boxer, chihuahua, english cocker spaniel, english setter, german shorthaired, great pyrenees,
havanese, japanese chin, keeshond, leonberger, miniature pinscher, newfoundland, pomeranian, pug,
saint bernard, samoyed, scottish terrier, shiba inu, staffordshire bull terrier, wheaten terrier.
The bird has a short conical beak, a black crown, white cheeks and a long forked tail. It is
perched on a branch near the water. The aircraft has four engines, a double deck and swept wings.
The car is a red two-door coupe with alloy wheels. The flower has five yellow petals around a dark
centre. Describe the image in one sentence. There is a small brown dog sitting on the grass.
User: Assistant: USER: ASSISTANT: Human: GPT: system: Answer the question using a single word or phrase.
"""

BYTE_TOKENS = tuple(f"<0x{value:02X}>" for value in range(256))
# Printable ASCII is always in the alphabet so English text never needs byte fallback.
ALPHABET = sorted(set(string.ascii_letters + string.digits + string.punctuation))


def corpus_lines() -> list[str]:
    return CORPUS.splitlines()


@cache
def train_metaspace_bpe(
    vocab_size: int, head: tuple[str, ...], unk_token: str, prefix_space: bool
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a SentencePiece-style BPE: `head` tokens, the 256 byte tokens, then pieces."""
    tokenizer = Tokenizer(models.BPE(unk_token=unk_token, byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first" if prefix_space else "never", split=True
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*head, *BYTE_TOKENS],
        initial_alphabet=ALPHABET,
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus_lines(), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    # tokenizers >= 0.20 writes merges as pairs, older releases as "left right" strings
    return model["vocab"], [tuple(pair.split(" ", 1) if isinstance(pair, str) else pair) for pair in model["merges"]]


@cache
def train_metaspace_unigram(
    vocab_size: int, head: tuple[str, ...], unk_token: str
) -> list[tuple[str, float]]:
    """Scored pieces of a SentencePiece-style unigram model, `head` tokens first."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=list(head), unk_token=unk_token, show_progress=False
    )
    tokenizer.train_from_iterator(corpus_lines(), trainer)
    trained = [(piece, round(score, 6)) for piece, score in json.loads(tokenizer.to_str())["model"]["vocab"]]
    # Run to run, the trainer's float sums wobble in the last bits and single characters come in hash
    # order. Rounded scores, sorted ties, and all single characters (with the printable ASCII it never
    # saw) ranked last in a fixed order make the vocabulary identical every time.
    learned = sorted((-score, piece) for piece, score in trained[len(head) :] if len(piece) > 1)
    floor = -learned[-1][0]
    chars = sorted({piece for piece, _ in trained[len(head) :] if len(piece) == 1} | set(ALPHABET))
    return [
        *((piece, 0.0) for piece in head),
        *((piece, -negated) for negated, piece in learned),
        *((char, round(floor - 1 - index / 100, 6)) for index, char in enumerate(chars)),
    ]


@cache
def wordpiece_vocab(vocab_size: int, head: tuple[str, ...]) -> dict[str, int]:
    """Lower-cased BERT-style WordPiece vocabulary: `head`, every character alone and as `##c`, then
    the corpus's most frequent words.

    Built by counting rather than with the WordPiece trainer, whose tie-breaking changes from run to run.
    """
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter(
        word
        for line in corpus_lines()
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line))
    )
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    pieces = [*head, *chars, *(f"##{char}" for char in chars)]
    by_frequency = sorted(words, key=lambda word: (-words[word], word))
    pieces += [word for word in by_frequency if word not in pieces][: vocab_size - len(pieces)]
    return {piece: index for index, piece in enumerate(pieces)}


def _with_special_tokens(
    tokenizer: TokenizersBackend, extra_special_tokens: Sequence[str]
) -> TokenizersBackend:
    if extra_special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra_special_tokens)})
    return tokenizer


def llama_tokenizer(extra_special_tokens: Sequence[str] = (), **kwargs) -> LlamaTokenizer:
    """Llama/Mistral/Vicuna layout: `<unk>`=0, `<s>`=1, `</s>`=2, byte tokens, pieces, then the extras.

    Adds BOS and pads on the left, written into tokenizer_config.json so that loaders which fall back
    to the generic TokenizersBackend (transformers does so for llava) keep the left padding.
    """
    vocab, merges = train_metaspace_bpe(1000, ("<unk>", "<s>", "</s>"), "<unk>", prefix_space=True)
    kwargs = {"add_bos_token": True, "padding_side": "left", **kwargs}
    tokenizer = LlamaTokenizer(vocab=dict(vocab), merges=list(merges), **kwargs)
    return _with_special_tokens(tokenizer, extra_special_tokens)


def gemma_tokenizer(extra_special_tokens: Sequence[str] = (), **kwargs) -> GemmaTokenizer:
    """Gemma layout: `<pad>`=0, `<eos>`=1, `<bos>`=2, `<unk>`=3, `<mask>`=4, byte tokens, pieces; no prefix space."""
    head = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
    vocab, merges = train_metaspace_bpe(1000, head, "<unk>", prefix_space=False)
    kwargs = {"add_bos_token": True, "padding_side": "left", **kwargs}
    tokenizer = GemmaTokenizer(vocab=dict(vocab), merges=list(merges), **kwargs)
    return _with_special_tokens(tokenizer, extra_special_tokens)


def t5_tokenizer(**kwargs) -> T5Tokenizer:
    """T5 layout: `<pad>`=0, `</s>`=1, `<unk>`=2, unigram pieces, then 100 `<extra_id_N>` sentinels."""
    pieces = train_metaspace_unigram(800, ("<pad>", "</s>", "<unk>"), "<unk>")
    return T5Tokenizer(vocab=list(pieces), **kwargs)


def bert_tokenizer(**kwargs) -> BertTokenizer:
    """Uncased BERT layout (the Q-Former tokenizer): `[PAD]`=0, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`, pieces."""
    vocab = wordpiece_vocab(600, ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"))
    return BertTokenizer(vocab=dict(vocab), **kwargs)


def portable_llama_tokenizer(extra_special_tokens: Sequence[str] = ()):
    """The llama_tokenizer layout as a generic fast tokenizer (PreTrainedTokenizerFast around a
    `tokenizers` BPE with byte fallback and a BOS post-processor), which transformers 4.x and 5.x
    both save and load: the remote-code stand-ins use it, since they also run in the remote-code
    environment (transformers 4.40)."""
    from tokenizers import decoders, processors
    from transformers import PreTrainedTokenizerFast

    vocab, merges = train_metaspace_bpe(1000, ("<unk>", "<s>", "</s>"), "<unk>", prefix_space=True)
    backend = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges), unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(content=" ", left=1)])
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<unk>", padding_side="left")
    if extra_special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra_special_tokens)})
    return tokenizer
