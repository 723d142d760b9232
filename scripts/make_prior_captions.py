"""Write trainers/captions/everyday.txt: the knowledge-preservation captions of the TextBoost trainer.

The captions are composed from the hand-written vocabularies below (written for TextTune, no
dataset involved) with a fixed seed, so the file is the same on every run. Each topic keeps its
nouns, adjectives, actions and places mutually compatible, which keeps the combinations natural
("an old fisherman mending a net on a wooden pier at dawn", never "a cat driving a building").
The output is CC0: see trainers/captions/README.md.

    python3 scripts/make_prior_captions.py          # (re)write the file
    python3 scripts/make_prior_captions.py --check  # exit 1 if the file differs from what it would write
"""
import argparse
import os
import random
import sys
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "trainers", "captions", "everyday.txt")
SEED = 0
TARGET = 1500
MIN_WORDS = 2  # before any ", style" suffix
MAX_WORDS = 30
MAX_TRIES = 200_000


def items(text):
    """'a, b, c' -> ('a', 'b', 'c'); the vocabularies below are written as comma-separated strings."""
    return tuple(s.strip() for s in text.split(",") if s.strip())


@dataclass(frozen=True)
class Topic:
    """One coherent family of subjects: every adjective, action and place fits every noun.

    nouns are "singular|plural" when a plural is allowed (plain "singular" otherwise); for the
    scenery kinds ("scene", "interior", "art") they carry their own article. `air` is where the
    subject is when no place is named ("out", "in" or "" for no lighting/weather phrase); `act`
    means the places need a verb ("walking along a beach", never "a woman along a beach");
    `weather` is off where light and weather make no sense (under water).
    """
    kind: str
    nouns: tuple
    adjs: tuple = ()
    actions: tuple = ()
    outdoors: tuple = ()
    indoors: tuple = ()
    wear: tuple = ()
    air: str = ""
    seasons: bool = False
    lead: bool = False
    act: bool = False
    weather: bool = True


def topic(kind, nouns, adjs="", actions="", outdoors="", indoors="", wear="", air=None, seasons=False,
          lead=False, act=False, weather=True):
    if air is None:
        air = "out" if outdoors and not indoors else "in" if indoors and not outdoors else ""
    return Topic(kind, items(nouns), items(adjs), items(actions), items(outdoors), items(indoors),
                 items(wear), air, seasons, lead, act, weather)


# --- conditions: time of day, weather, light -------------------------------------------------
OUT_WHEN = items("at sunset, at sunrise, at dawn, at dusk, at night, in the rain, on a foggy morning, "
                 "on a sunny afternoon, under a cloudy sky, under a clear blue sky, at golden hour, "
                 "in the midday sun, on a windy day, after the rain, on an overcast day, "
                 "in the early morning, in the late afternoon, under a stormy sky, in the blue hour")
SEASON_WHEN = items("in autumn, in early spring, in winter, in the snow, on a summer afternoon, "
                    "after a fresh snowfall, on a crisp autumn morning")
IN_WHEN = items("in soft window light, in warm lamplight, in the morning light, on a rainy afternoon, "
                "late at night, in the evening, on a winter evening, in natural light")
LEADS = items("sunrise over, sunset over, fog rolling over, storm clouds over, morning mist over, "
              "moonlight over, dark clouds gathering over, the first light of day over")

# --- people ----------------------------------------------------------------------------------
ADULT = "woman|women, man|men, young woman|young women, young man|young men, old man|old men, " \
        "old woman|old women, elderly man|elderly men, elderly woman|elderly women, " \
        "middle-aged woman|middle-aged women, middle-aged man|middle-aged men, person|people"
ADULT_ADJS = "smiling, tall, curly-haired, tired, cheerful, thoughtful, short-haired"
CLOTHES = "in a yellow raincoat, in a straw hat, in a denim jacket, in a red scarf, with a backpack, " \
          "in a wool coat, in a knitted sweater, in a green jacket, wearing glasses, in a striped shirt"
CHILD = "little girl|little girls, little boy|little boys, child|children, toddler|toddlers, " \
        "young girl|young girls, young boy|young boys"
CHILD_ADJS = "happy, curious, laughing, giggling, barefoot, sleepy, smiling"
CHILD_CLOTHES = "in a red raincoat, in rubber boots, in a sun hat, in pajamas, in a striped sweater, " \
                "with a bright yellow umbrella, in overalls"

PEOPLE = [
    topic("person", ADULT, ADULT_ADJS,
          "reading a book|reading books, feeding pigeons, sitting on a bench, walking a dog|walking dogs, "
          "jogging, eating a sandwich|eating sandwiches, doing yoga, flying a kite|flying kites, "
          "playing chess, having a picnic, taking a nap, sketching in a notebook|sketching in notebooks",
          outdoors="in a park, in a city park, by a duck pond, on a grassy hill, in a public garden, "
                   "in a botanical garden", wear=CLOTHES, seasons=True),
    topic("person", ADULT, ADULT_ADJS,
          "walking, carrying shopping bags, looking at a map, holding an umbrella|holding umbrellas, "
          "riding a bicycle|riding bicycles, crossing the street, talking on the phone, hailing a taxi, "
          "walking home, carrying a bag of groceries|carrying bags of groceries",
          outdoors="on a busy city street, on a quiet side street, in an old town square, "
                   "on a cobblestone street, near a train station, on a narrow street",
          wear=CLOTHES, seasons=True),
    topic("person", ADULT, ADULT_ADJS,
          "reading a book|reading books, drinking tea, knitting a scarf|knitting scarves, "
          "writing in a notebook|writing in notebooks, working on a laptop|working on laptops, "
          "doing a crossword puzzle|doing crossword puzzles, folding laundry, talking on the phone, "
          "looking out the window, writing a letter|writing letters, listening to music, "
          "sorting old photographs",
          indoors="in a cozy living room, at a kitchen table, in a small apartment, on a sofa, by a window, "
                  "in an armchair, at a wooden desk", wear=CLOTHES),
    topic("person", ADULT, ADULT_ADJS,
          "drinking coffee, reading a newspaper, working on a laptop|working on laptops, "
          "eating a croissant|eating croissants, chatting with a friend, "
          "writing in a journal|writing in journals, waiting for a friend, eating breakfast",
          indoors="in a small cafe, in a busy coffee shop, at a window seat in a diner, "
                  "at a table in a quiet cafe, in a bakery cafe", wear=CLOTHES),
    topic("person", ADULT, ADULT_ADJS,
          "walking, hiking, running, strolling, walking with a dog",
          outdoors="along a beach, on a mountain trail, through a forest, along a river, across a meadow, "
                   "along a country lane, across a wooden bridge, through a field of tall grass",
          wear=CLOTHES, seasons=True, act=True),
    topic("person", "man and his dog, woman and her dog, old man and his dog, girl and her dog, "
                    "boy and his dog",
          actions="walking, running, resting, sitting together, playing",
          outdoors="on a beach, in a forest, in a meadow, in a park, on a hillside, by a lake",
          seasons=True),
    topic("person", "girl, young woman, man, woman, boy, old man",
          actions="riding a horse, riding a brown horse, riding a white horse, leading a horse",
          outdoors="along a beach, across a field, on a mountain trail, through a forest, "
                   "across a shallow river, along a dirt road", seasons=True, act=True),
    topic("person", CHILD, CHILD_ADJS,
          "playing with a ball, blowing bubbles, flying a kite|flying kites, "
          "riding a scooter|riding scooters, jumping in puddles, chasing pigeons, "
          "playing on a swing|playing on swings, running, picking flowers, "
          "riding a tricycle|riding tricycles, playing with a puppy",
          outdoors="in a park, in a backyard, in a playground, on a grassy lawn, in a garden",
          wear=CHILD_CLOTHES, seasons=True),
    topic("person", CHILD, CHILD_ADJS,
          "building a sandcastle|building sandcastles, collecting seashells, running into the waves, "
          "playing in the sand, digging with a plastic shovel|digging with plastic shovels, "
          "running along the water",
          outdoors="on a sandy beach, at the seaside, by the shore", wear=CHILD_CLOTHES),
    topic("person", CHILD, CHILD_ADJS,
          "drawing with crayons, building with wooden blocks, "
          "reading a picture book|reading picture books, doing homework, playing with a toy train, "
          "painting with watercolors, playing with a cat, building a blanket fort",
          indoors="at a kitchen table, on a living room floor, in a classroom, in a bright playroom, "
                  "in a bedroom", wear=CHILD_CLOTHES),
    topic("person", "teenage girl|teenage girls, teenage boy|teenage boys, teenager|teenagers",
          "smiling, bored, cheerful",
          "skateboarding, riding a bicycle|riding bicycles, listening to music, "
          "taking a photo|taking photos, sitting on a wall, eating ice cream, laughing with friends",
          outdoors="in a skate park, on a city street, by a river, on a boardwalk, in a parking lot",
          wear="in a hoodie, with headphones, in a baseball cap, with a backpack"),
    topic("person", "fisherman|fishermen", "old, weathered, young, bearded, elderly",
          "mending a net, hauling in a net, casting a line|casting lines, sorting the catch, "
          "coiling a rope, repairing a fishing net",
          outdoors="on a wooden pier, in a small boat, in a harbor, on a pebble beach, on a rocky shore",
          wear="in a yellow raincoat, in rubber boots, in a knitted cap, in a wool sweater"),
    topic("person", "baker|bakers", "young, cheerful, old, busy",
          "kneading dough, shaping loaves of bread, pulling bread out of an oven, "
          "dusting flour on a counter, decorating a cake, arranging pastries in a display case",
          indoors="in a small bakery, in a rustic kitchen, in a village bakery, in a bakery kitchen",
          wear="in a white apron, covered in flour"),
    topic("person", "chef|chefs, cook|cooks", "young, focused, busy, smiling",
          "chopping vegetables, plating a dish, stirring a large pot, tossing vegetables in a pan, "
          "tasting a sauce, slicing bread, grilling fish",
          indoors="in a restaurant kitchen, in a busy kitchen, in an open kitchen, in a small kitchen",
          wear="in a white apron, in a chef's jacket"),
    topic("person", "farmer|farmers", "old, young, elderly, smiling",
          "feeding chickens, carrying a bale of hay|carrying bales of hay, leaning on a fence, "
          "holding a basket of vegetables|holding baskets of vegetables, milking a cow, "
          "walking with a dog, driving a tractor",
          outdoors="on a small farm, in the countryside, near a red barn, on a dairy farm, in a farmyard",
          wear="in a straw hat, in rubber boots, in overalls, in a flannel shirt", seasons=True),
    topic("person", "gardener|gardeners", "elderly, young, old, smiling",
          "watering plants, planting seedlings, pruning roses, pushing a wheelbarrow|pushing wheelbarrows, "
          "raking leaves, picking tomatoes, pulling weeds",
          outdoors="in a vegetable garden, in a backyard garden, in a community garden, "
                   "in a walled garden, in a cottage garden",
          wear="in a straw hat, in gardening gloves, in rubber boots", seasons=True),
    topic("person", "nurse|nurses, doctor|doctors", "young, smiling, tired, kind",
          "checking a chart|checking charts, talking with a patient, walking down a corridor, "
          "writing notes, holding a clipboard|holding clipboards",
          indoors="in a hospital corridor, in a small clinic, at a nurses' station, in a hospital ward",
          wear="in blue scrubs, in a white coat"),
    topic("person", "carpenter|carpenters, woodworker", "old, young, bearded, skilled",
          "sanding a table, sawing a plank|sawing planks, measuring a board|measuring boards, "
          "building a chair, carving a spoon|carving spoons, planing a piece of wood",
          indoors="in a workshop, in a wood workshop, in a garage workshop, in a cluttered workshop",
          wear="in a leather apron, in safety glasses"),
    topic("person", "painter|painters, artist|artists", "young, old, elderly, bearded",
          "painting at an easel|painting at easels, sketching in a notebook|sketching in notebooks, "
          "mixing paint on a palette|mixing paint, painting a landscape",
          outdoors="by a river, in a field of flowers, on a hillside, in a town square, by the sea",
          indoors="in a cluttered studio, in an attic studio, in a small studio",
          wear="in a paint-splattered apron, in a beret"),
    topic("person", "musician|musicians, street musician|street musicians", "young, old, bearded, elderly",
          "playing a guitar|playing guitars, playing an accordion|playing accordions, "
          "playing a violin|playing violins, playing a saxophone|playing saxophones, "
          "playing a trumpet|playing trumpets, singing, playing a cello|playing cellos",
          outdoors="on a street corner, in a town square, under a stone bridge, in a park",
          indoors="in a subway station, on a small stage, in a small bar"),
    topic("person", "mechanic|mechanics", "young, old, busy",
          "fixing a car engine, changing a tire, repairing a motorcycle, working under a car",
          indoors="in a garage, in an auto repair shop, in a small workshop",
          wear="in grease-stained overalls, in a blue jumpsuit"),
    topic("person", "potter|potters", "young, old, focused",
          "shaping clay on a wheel|shaping clay on wheels, glazing a bowl|glazing bowls, "
          "trimming a vase|trimming vases, throwing a pot|throwing pots",
          indoors="in a pottery studio, in a small workshop, in a sunlit studio",
          wear="in a clay-covered apron"),
    topic("person", "tailor|tailors, seamstress", "old, young, elderly",
          "sewing a dress|sewing dresses, measuring fabric, working at a sewing machine, pinning a hem, "
          "cutting cloth",
          indoors="in a tailor shop, in a small workroom, in a sewing room",
          wear="with a measuring tape around the neck, wearing glasses"),
    topic("person", "librarian|librarians", "young, old, smiling",
          "shelving books, stacking books, reading at a desk, pushing a cart of books",
          indoors="in a quiet library, in an old library, between tall bookshelves, in a school library"),
    topic("person", "beekeeper|beekeepers", "young, old, careful",
          "checking a beehive|checking beehives, holding a frame of honeycomb|holding frames of honeycomb, "
          "lifting the lid of a beehive|lifting the lids of beehives",
          outdoors="in a meadow, in an apple orchard, beside a row of hives, in a field of wildflowers",
          wear="in a white protective suit, in a veiled hat"),
    topic("person", "shepherd", "old, young, weathered",
          "herding sheep, leading a flock of sheep, watching over a flock of sheep, leaning on a staff",
          outdoors="on a grassy hillside, in the mountains, along a country road, in a high meadow",
          seasons=True),
    topic("person", "street vendor|street vendors, market vendor", "old, young, smiling, busy",
          "selling fruit, grilling corn, selling flowers, arranging vegetables, selling bread, "
          "weighing tomatoes on a scale",
          outdoors="at a market stall, on a busy street, in an open-air market, at a night market"),
    topic("person", "barista|baristas", "young, smiling, busy",
          "making a latte|making lattes, pouring latte art, grinding coffee beans, steaming milk, "
          "serving a coffee|serving coffee",
          indoors="in a coffee shop, behind a cafe counter, in a small cafe", wear="in a brown apron"),
    topic("person", "firefighter|firefighters", "young, tired, smiling",
          "holding a fire hose, climbing a ladder, standing next to a fire truck, rolling up a hose",
          outdoors="in front of a fire station, on a city street, in a parking lot",
          wear="in a yellow helmet, in full gear"),
    topic("person", "teacher|teachers", "young, old, smiling, patient",
          "writing on a chalkboard, reading to a class, helping a student|helping students, "
          "pointing at a map",
          indoors="in a classroom, in a primary school classroom, in a small village school"),
    topic("person", "cyclist|cyclists", "young, tired, determined",
          "riding, racing, pedaling uphill, resting by the roadside",
          outdoors="on a mountain road, along a coastal road, through a city park, on a country road, "
                   "on a gravel path", wear="in a bright jersey, in a helmet", act=True),
    topic("person", "surfer|surfers", "young, tanned, old",
          "riding a wave, paddling out to sea, carrying a surfboard|carrying surfboards, waiting for a wave",
          air="out"),
    topic("person", "photographer|photographers", "young, old, curious",
          "taking photos, holding a camera|holding cameras, setting up a tripod|setting up tripods, "
          "looking through a camera|looking through cameras",
          outdoors="on a city rooftop, in a forest, at the edge of a cliff, on a beach, in a market"),
    topic("person", "ballet dancer|ballet dancers, dancer|dancers", "young, graceful",
          "dancing, stretching, practicing a leap, tying ballet shoes, spinning",
          indoors="in a dance studio, on a stage, in a rehearsal room, in front of a mirror"),
]

# --- animals ---------------------------------------------------------------------------------
CAT = "cat|cats, kitten|kittens"
CAT_ADJS = "black, white, ginger, gray, tabby, fluffy, sleepy, striped, long-haired, tortoiseshell"
DOG = "dog|dogs, puppy|puppies"
DOG_ADJS = "small, big, muddy, happy, black, brown, spotted, white, fluffy, old, wet"
BREEDS = "golden retriever|golden retrievers, dachshund|dachshunds, border collie|border collies, " \
         "beagle|beagles, labrador|labradors, corgi|corgis, greyhound|greyhounds, poodle|poodles"
BREED_ADJS = "happy, old, young, muddy, sleepy, playful"
PASTURES = "in a green pasture, on a hillside, in a field, by a wooden fence, in a farmyard, near a barn, " \
           "in a mountain meadow, on a grassy slope"

ANIMALS = [
    topic("pet", CAT, CAT_ADJS,
          "sleeping, curled up, stretching, yawning, napping, sitting, playing with a ball of yarn, "
          "lying in a patch of sunlight, watching a fly",
          indoors="on a sofa, on a windowsill, on a wooden floor, in a cardboard box, on a knitted blanket, "
                  "on a bookshelf, on an unmade bed, on a kitchen counter"),
    topic("pet", CAT, CAT_ADJS,
          "sitting, sleeping, stalking through the grass, stretching, walking, looking up",
          outdoors="in a garden, on a stone wall, on a porch step, on a wooden fence, on a rooftop, "
                   "among flower pots", seasons=True),
    topic("pet", DOG, DOG_ADJS,
          "running, playing fetch, chasing a ball, sitting, carrying a stick|carrying sticks, "
          "rolling in the grass, jumping, digging a hole, waiting patiently",
          outdoors="in a park, on a beach, in a backyard, in a meadow, on a forest trail, in a garden",
          seasons=True),
    topic("pet", BREEDS, BREED_ADJS,
          "running, playing fetch, chasing a ball, sitting, carrying a stick|carrying sticks, lying down, "
          "jumping",
          outdoors="in a park, on a beach, in a backyard, in a meadow, on a forest trail, in a garden",
          seasons=True),
    topic("pet", DOG + ", " + BREEDS, "sleepy, old, small, happy",
          "sleeping, napping, chewing a toy|chewing toys, curled up, lying, waiting patiently, looking up",
          indoors="on a sofa, on a rug, in a dog bed, by a fireplace, on a kitchen floor, on a bed"),
    topic("pet", "cat and a dog, dog and a cat, puppy and a kitten",
          actions="sleeping, curled up together, sitting side by side, napping",
          indoors="on a rug, on a sofa, by a fireplace, on a bed, in a basket"),
    topic("pet", "rabbit|rabbits, bunny|bunnies, guinea pig|guinea pigs",
          "white, brown, fluffy, small, gray, spotted",
          "eating a carrot|eating carrots, sitting, nibbling grass, sniffing a flower, sleeping",
          outdoors="in a garden, on a lawn, in a meadow, in a vegetable patch"),
    topic("pet", "parrot|parrots, budgie|budgies, canary|canaries", "green, blue, yellow, colorful, small",
          "perched on a wooden stand, sitting on a shoulder, sitting in a cage, preening", air="in"),
    topic("pet", "goldfish, tropical fish", "small, orange, bright",
          "swimming in a glass bowl, swimming in an aquarium, swimming among water plants", air="in"),
    topic("wildlife", "robin|robins, sparrow|sparrows, blue jay|blue jays, finch|finches, "
                      "cardinal|cardinals, blackbird|blackbirds, wren|wrens, blue tit|blue tits",
          "small, little, fluffy",
          "perched on a branch, sitting on a fence post, perched on a bird feeder, singing on a branch, "
          "bathing in a birdbath, perched on a snowy branch, hopping on the lawn", air="out", seasons=True),
    topic("wildlife", "owl|owls, barn owl|barn owls, eagle|eagles, hawk|hawks",
          "young, large, majestic, watchful",
          "perched on a branch, flying over a field, perched on a fence post, sitting on a rock, "
          "soaring over the mountains, perched on an old stump", air="out", seasons=True),
    topic("wildlife", "hummingbird|hummingbirds, bee|bees, butterfly|butterflies",
          "small, tiny, colorful",
          "hovering near a flower, drinking nectar, flying over a flower bed", air="out"),
    topic("wildlife", "heron|herons, duck|ducks, swan|swans, goose|geese, pelican|pelicans",
          "white, gray, young, graceful",
          "swimming, standing in shallow water, wading, resting, taking off, floating",
          outdoors="on a calm pond, on a lake, by a river, in a marsh, among the reeds, at the water's edge"),
    topic("wildlife", "seagull|seagulls", "",
          "perched on a dock post, flying over the sea, standing on a pier, circling a fishing boat, "
          "standing on the sand", air="out"),
    topic("tiny", "ladybug|ladybugs, butterfly|butterflies, bee|bees, dragonfly|dragonflies, "
                  "grasshopper|grasshoppers",
          "small, tiny, colorful",
          "resting on a flower, sitting on a green leaf, landing on a daisy, perched on a blade of grass, "
          "resting on a reed", air="out"),
    topic("tiny", "snail|snails", "small, tiny",
          "crawling on a leaf, crawling along a mossy log, on a wet stone, climbing a flower stem",
          air="out"),
    topic("farm", "cow|cows, horse|horses, sheep|sheep, goat|goats, donkey|donkeys, alpaca|alpacas",
          "brown, white, black, young, old, spotted, shaggy",
          "grazing, standing, resting, lying down, eating hay, looking at the camera, walking",
          outdoors=PASTURES, seasons=True),
    topic("farm", "calf|calves, lamb|lambs, foal|foals, baby goat|baby goats",
          "newborn, little, brown, white, spotted, black",
          "grazing, standing, resting, lying down, playing, looking at the camera, walking",
          outdoors=PASTURES, seasons=True),
    topic("farm", "chicken|chickens, hen|hens, rooster|roosters, duckling|ducklings, chick|chicks",
          "brown, white, black, speckled, young, little",
          "pecking at grain, scratching in the dirt, walking, perched on a fence, standing",
          outdoors="in a farmyard, in a backyard, near a barn, on a farm, in the grass"),
    topic("farm", "pig|pigs, piglet|piglets", "pink, spotted, muddy, little, big",
          "rolling in the mud, eating, sleeping, sniffing the ground, running",
          outdoors="in a muddy pen, on a farm, in a farmyard, in a straw-covered pen"),
    topic("wildlife", "deer|deer, fox|foxes, red fox|red foxes, brown bear|brown bears, wolf|wolves, "
                      "moose|moose, badger|badgers, wild boar|wild boars, hare|hares, hedgehog|hedgehogs",
          "young, curious",
          "standing, walking, looking at the camera, running, drinking from a stream, resting",
          outdoors="in a forest, in a misty meadow, at the edge of a forest, among fallen leaves, "
                   "in tall grass, in a birch forest, on a snowy hillside", seasons=True),
    topic("wildlife", "squirrel|squirrels, chipmunk|chipmunks", "small, little, curious",
          "eating a nut|eating nuts, climbing a tree, sitting on a tree stump, running along a branch, "
          "foraging",
          outdoors="in a park, in a forest, in a garden, among fallen leaves", seasons=True),
    topic("wildlife", "elephant|elephants, giraffe|giraffes, zebra|zebras, lion|lions, rhino|rhinos, "
                      "cheetah|cheetahs",
          "young, old, large",
          "walking, standing, resting, drinking at a watering hole, lying in the shade",
          outdoors="on the savanna, in tall dry grass, under an acacia tree, on a dusty plain"),
    topic("wildlife", "sea turtle|sea turtles, dolphin|dolphins, manta ray|manta rays, octopus, jellyfish, "
                      "clownfish",
          "young, large, small, graceful",
          "swimming, gliding, drifting",
          outdoors="over a coral reef, in clear blue water, near the surface, in the deep ocean, "
                   "among sea grass", weather=False),
    topic("wildlife", "seal|seals, sea lion|sea lions, penguin|penguins, puffin|puffins",
          "young, small, sleepy",
          "lying on a rock, resting, sunbathing, standing, waddling",
          outdoors="on a rocky shore, on an ice floe, on a sandy beach, on a cliff ledge"),
    topic("wildlife", "frog|frogs, turtle|turtles, lizard|lizards", "green, small, little, old",
          "sitting, resting, basking",
          outdoors="on a mossy rock, on a log, by a pond, on a warm stone"),
]

# --- vehicles --------------------------------------------------------------------------------
COLORS = "red, blue, green, yellow, white, black, orange, silver, pale blue, dark green, cream-colored"

VEHICLES = [
    topic("vehicle", "bicycle|bicycles, motorcycle|motorcycles, scooter|scooters, moped|mopeds",
          COLORS + ", vintage, rusty, old, dusty",
          "leaning against a brick wall, parked on a narrow street, parked outside a cafe, "
          "parked by a canal, chained to a railing, leaning against a lamppost, "
          "parked in front of a blue door",
          air="out"),
    topic("vehicle", "bicycle|bicycles", COLORS + ", vintage, old",
          "with a basket of flowers|with baskets of flowers, with a wicker basket|with wicker baskets, "
          "lying in the grass, leaning against a tree",
          outdoors="in a small town, on a quiet street, in a park, in the countryside"),
    topic("vehicle", "car|cars, convertible, pickup truck|pickup trucks, station wagon, camper van, "
                     "vintage car|vintage cars, taxi|taxis, delivery van",
          COLORS + ", old, rusty, dusty, shiny",
          "parked on a quiet street, driving along a coastal road, driving down a desert highway, "
          "parked in front of a house, parked under a tree, covered in snow, driving through a forest, "
          "parked at a gas station, stuck in traffic, driving on a mountain pass, parked by the beach",
          air="out"),
    topic("vehicle", "train|trains, steam train|steam trains, freight train|freight trains, "
                     "passenger train|passenger trains, high-speed train",
          "long, old, red, blue",
          "crossing a stone bridge, passing through a valley, arriving at a station, "
          "winding through the mountains, passing a field of sunflowers, crossing a viaduct",
          air="out", seasons=True),
    topic("vehicle", "bus|buses, tram|trams, double-decker bus|double-decker buses, trolleybus, school bus",
          "red, yellow, green, old, crowded, empty",
          "driving down a city street, turning a corner, waiting at a stop, crossing a bridge, "
          "driving through the rain", air="out"),
    topic("vehicle", "sailboat|sailboats, fishing boat|fishing boats, rowboat|rowboats, canoe|canoes, "
                     "kayak|kayaks, wooden boat|wooden boats",
          "small, old, white, red, blue, weathered, yellow",
          "moored in a harbor, floating on a calm lake, tied to a dock, pulled up on a beach, "
          "drifting on a river, resting on the shore, crossing a bay",
          air="out"),
    topic("vehicle", "hot air balloon|hot air balloons", "colorful, striped, red, rainbow-colored",
          "floating over a valley, drifting above fields, rising over the hills, floating over a city, "
          "drifting over a desert", air="out"),
    topic("vehicle", "airplane|airplanes, propeller plane, seaplane, passenger jet",
          "white, old, small, red, silver",
          "flying over the clouds, taking off from a runway, parked on a runway, landing at an airport, "
          "flying over the ocean, flying over snowy mountains", air="out"),
    topic("vehicle", "tractor|tractors", "red, green, old, rusty, yellow, blue",
          "plowing a field, parked next to a barn, driving along a dirt road, pulling a trailer of hay, "
          "harvesting wheat", air="out", seasons=True),
    topic("vehicle", "fire truck, ambulance, garbage truck, ice cream truck, food truck",
          "old, bright, shiny",
          "parked on a city street, driving down a road, stopped at a traffic light, parked by a park",
          air="out"),
]

# --- food and drink ---------------------------------------------------------------------------
TABLES = "on a wooden table, on a kitchen counter, on a marble countertop, on a rustic table, " \
         "on a checkered tablecloth, on a dark background"

FOOD = [
    topic("food", "loaf of bread, apple pie, croissant|croissants, chocolate cake, "
                  "blueberry muffin|blueberry muffins, cinnamon roll|cinnamon rolls, baguette|baguettes, "
                  "slice of cherry pie, lemon tart, stack of cookies, pretzel|pretzels, plate of scones, "
                  "birthday cake, bagel|bagels",
          "homemade, freshly baked, warm, golden",
          indoors=TABLES + ", on a wooden cutting board, on a cooling rack, in a bakery window"),
    topic("food", "bowl of ramen, bowl of tomato soup, plate of spaghetti, stack of pancakes, "
                  "pizza|pizzas, bowl of rice with vegetables, grilled cheese sandwich, plate of tacos, "
                  "bowl of oatmeal with berries, plate of dumplings, bowl of curry, fried egg on toast, "
                  "plate of sushi, burger and fries, bowl of salad, roast chicken, pot of stew, "
                  "plate of fried rice, breakfast of eggs and toast, bowl of noodle soup",
          "homemade, delicious, simple",
          indoors=TABLES + ", on a restaurant table, on a tray"),
    topic("food", "bowl of fresh strawberries, basket of red apples, bunch of ripe bananas, "
                  "sliced watermelon, pile of lemons, crate of tomatoes, bowl of cherries, "
                  "basket of peaches, bunch of grapes, halved avocado, bowl of oranges, "
                  "basket of mushrooms, bunch of carrots",
          indoors=TABLES + ", on a windowsill",
          outdoors="at a market stall, on a picnic blanket, in a farmers market"),
    topic("food", "cup of coffee|cups of coffee, cup of tea|cups of tea, "
                  "mug of hot chocolate|mugs of hot chocolate, cappuccino|cappuccinos, pot of tea",
          actions="with steam rising, next to an open book, beside a croissant, beside a plate of cookies, "
                  "next to a pair of glasses",
          indoors="on a cafe table, on a wooden table, on a windowsill, on a bedside table, on a desk"),
    topic("food", "glass of lemonade|glasses of lemonade, glass of iced tea|glasses of iced tea, "
                  "glass of orange juice, strawberry smoothie, glass of water, pitcher of lemonade",
          actions="with ice cubes, with a slice of lemon, with a paper straw, with fresh mint",
          outdoors="on a picnic table, on a patio table, by a swimming pool, on a porch railing"),
    topic("food", "ice cream cone|ice cream cones, bowl of ice cream, slice of watermelon, "
                  "skewer of grilled corn, hot dog, bag of roasted chestnuts, paper cone of fries",
          outdoors="at a street fair, on a beach, at a night market, in a park, on a boardwalk",
          air="out"),
]

# --- household objects and things ------------------------------------------------------------
SHELVES = "on a windowsill, on a wooden shelf, on a kitchen table, on a white background, " \
          "on a linen tablecloth, on an old wooden table"

OBJECTS = [
    topic("object", "teapot|teapots, coffee mug|coffee mugs, vase|vases, bowl|bowls, jug|jugs, pitcher, "
                    "teacup|teacups, jar|jars",
          "ceramic, glass, porcelain, white, blue, yellow, handmade, old, chipped, striped, green, "
          "hand-painted", indoors=SHELVES),
    topic("object", "vase of sunflowers, jar of wildflowers, bouquet of tulips, vase of roses, "
                    "bunch of peonies, vase of lilies, bouquet of daisies, vase of dried flowers, "
                    "jug of lavender",
          indoors="on a windowsill, on a kitchen table, on a wooden table, on a dresser, "
                  "on a bedside table, next to an open window"),
    topic("furniture", "armchair|armchairs, sofa, rocking chair, reading chair, bench, ottoman",
          "old, leather, velvet, green, red, mustard yellow, worn, wicker, blue, gray, comfortable",
          indoors="in a cozy living room, by a fireplace, next to a window, in an empty room, "
                  "in a corner of a room, in a sunroom"),
    topic("object", "desk lamp, alarm clock, radio, typewriter, camera, record player, telephone, "
                    "sewing machine, pocket watch, compass, globe",
          "vintage, old, red, black, dusty, retro, small",
          indoors="on a wooden desk, on a shelf, on a white background, on a cluttered desk, "
                  "on a bedside table, in an antique shop"),
    topic("object", "stack of books, open notebook, fountain pen, old map, pile of old letters, open book, "
                    "pair of reading glasses, stack of magazines, set of colored pencils, "
                    "leather-bound journal, handwritten letter",
          indoors="on a wooden desk, on a library table, next to a cup of tea, on a windowsill, "
                  "on a bed, on a coffee table"),
    topic("object", "candle|candles, lantern|lanterns, oil lamp",
          "lit, white, old, glowing, flickering, small",
          indoors="on a table, on a windowsill, in a dark room, on a mantelpiece, on a wooden shelf",
          outdoors="on a porch, on a stone step, in a garden, hanging from a tree"),
    topic("object", "teddy bear|teddy bears, wooden toy train, rubber duck|rubber ducks, kite, "
                    "rocking horse, toy car|toy cars, spinning top, rag doll|rag dolls, toy robot",
          "old, worn, small, handmade, red, yellow, blue, little",
          indoors="on a bed, on a shelf, on a wooden floor, in a toy box, on a windowsill, "
                  "on a white background"),
    topic("object", "straw hat, pair of rain boots, wool scarf, denim jacket, knitted sweater, "
                    "pair of sneakers, leather bag, umbrella, raincoat, pair of hiking boots",
          "red, yellow, old, worn, blue, green, striped",
          "hanging on a hook, folded on a bed, lying on a chair, hanging on a coat rack, "
          "by the front door, on a white background", air="in"),
    topic("object", "watering can|watering cans, wheelbarrow|wheelbarrows, garden shovel, rake",
          "old, rusty, green, red, metal, small",
          outdoors="in a garden, leaning against a shed, next to a flower bed, on a garden path, "
                   "by a greenhouse", seasons=True),
    topic("object", "acoustic guitar|acoustic guitars, violin|violins, cello|cellos, ukulele|ukuleles, "
                    "banjo, mandolin",
          "old, vintage, well-worn, wooden",
          "leaning against a wall, resting on a chair|resting on chairs, lying on a bed, "
          "in an open case|in open cases, on a stand|on stands",
          air="in"),
    topic("furniture", "piano, grand piano, upright piano", "old, black, white, dusty, wooden",
          indoors="in an empty hall, in a living room, by a window, on a stage, in a music room"),
    topic("object", "soccer ball, basketball, tennis racket, skateboard, baseball glove, "
                    "pair of roller skates, volleyball",
          "old, worn, new, muddy, red",
          outdoors="on a grass field, on an outdoor court, by a fence, on a sidewalk",
          indoors="in a gym, on a wooden floor, in a locker room"),
    topic("tiny", "key|keys, coin|coins, seashell|seashells, pebble|pebbles, feather|feathers, "
                  "pine cone|pine cones",
          indoors="on a wooden table, on a white background, in a glass jar, on a windowsill",
          outdoors="on the sand, on a stone path, on a mossy rock"),
]

# --- plants ----------------------------------------------------------------------------------
PLANTS = [
    topic("plant", "tulip|tulips, rose|roses, lily|lilies, peony|peonies, dahlia|dahlias",
          "red, pink, white, yellow, orange",
          "in full bloom, covered in dew drops, swaying in the wind, opening in the sun",
          outdoors="in a garden, in a flower bed, by a fence, along a path", air="out"),
    topic("plant", "daisy|daisies, poppy|poppies, sunflower|sunflowers, dandelion|dandelions",
          "tall, wild, lone, bright",
          "in full bloom, covered in dew drops, swaying in the wind, turning toward the sun",
          outdoors="in a garden, in a meadow, by a fence, along a path, at the edge of a field", air="out"),
    topic("tree", "field of sunflowers, field of lavender, meadow of wildflowers, patch of red poppies, "
                  "row of tulips, rose bush, hedge of hydrangeas, bed of marigolds",
          outdoors="in the countryside, by a farmhouse, along a country road, behind a stone wall, "
                   "on a hillside", air="out"),
    topic("tree", "oak tree|oak trees, maple tree|maple trees, pine tree|pine trees, "
                  "willow tree|willow trees, cherry tree|cherry trees, apple tree|apple trees, "
                  "birch tree|birch trees, chestnut tree|chestnut trees, lone tree",
          "old, tall, young, small, large",
          outdoors="on a hill, in a field, by a lake, in a park, in a courtyard, beside a country road, "
                   "on a riverbank, in a meadow", seasons=True),
    topic("tree", "cherry tree in full blossom, maple tree with red leaves, oak tree with autumn leaves, "
                  "apple tree full of fruit, weeping willow",
          outdoors="in a park, by a lake, in a garden, on a hill, in a quiet courtyard", air="out"),
    topic("tree", "palm tree|palm trees, coconut palm|coconut palms",
          "tall, leaning, young",
          outdoors="on a sandy beach, along a seaside promenade, by a swimming pool, on a tropical island"),
    topic("plant", "fern|ferns, monstera plant, cactus|cacti, succulent|succulents, snake plant, "
                   "bonsai tree, spider plant, orchid|orchids, basil plant, rubber plant",
          "small, large, tall, little, green",
          indoors="on a windowsill, on a wooden shelf, next to a window, on a desk, in a white ceramic pot, "
                  "in a terracotta pot, in a hanging basket, on a bathroom shelf"),
    topic("tiny", "mushroom|mushrooms, toadstool|toadstools", "small, red, wild, tiny, white, brown",
          outdoors="on a mossy log, on the forest floor, among fallen leaves, at the foot of a tree, "
                   "in wet grass", air="out"),
    topic("plant", "pumpkin|pumpkins, head of cabbage, tomato plant|tomato plants, row of lettuce, "
                   "bunch of herbs, strawberry plant|strawberry plants",
          outdoors="in a vegetable garden, in a raised bed, on a farm, in a greenhouse, in a kitchen garden"),
]

# --- buildings -------------------------------------------------------------------------------
RURAL = "in the countryside, on a hill, at the end of a dirt road, surrounded by fields, " \
        "among rolling hills, beside a stream, in a meadow, behind a stone wall"

BUILDINGS = [
    topic("building", "farmhouse, cottage, windmill, stone chapel, thatched cottage, stone farmhouse, "
                      "farm shed, water mill",
          "old, small, white, abandoned, weathered, quiet", outdoors=RURAL, seasons=True),
    topic("building", "barn|barns, red barn|red barns", "old, big, weathered, abandoned",
          outdoors=RURAL, seasons=True),
    topic("building", "log cabin, mountain hut, wooden chalet, alpine cabin", "small, cozy, old, remote",
          outdoors="in the mountains, in a snowy forest, by a frozen lake, on a mountainside, "
                   "among pine trees, at the edge of a forest", seasons=True),
    topic("building", "lighthouse|lighthouses", "old, white, tall, red and white, stone",
          outdoors="on a rocky headland, at the end of a pier, on a cliff, by the sea, on a small island"),
    topic("building", "beach hut|beach huts, boathouse, fishing hut|fishing huts",
          "colorful, small, wooden, blue, weathered",
          outdoors="on a beach, by the sea, along the shore, on stilts over the water, by a lake"),
    topic("building", "apartment building|apartment buildings, office tower|office towers, "
                      "skyscraper|skyscrapers, townhouse|townhouses",
          "old, modern, tall, red brick, narrow",
          outdoors="in a busy city, on a quiet street, in a downtown district, by a river, along a canal"),
    topic("building", "train station, factory, parking garage, warehouse|warehouses, power station",
          "old, abandoned, concrete, empty, modern, brick",
          outdoors="in an industrial area, by a river, on the edge of town, along a railway line"),
    topic("building", "bakery, bookshop, flower shop, cafe, corner shop, bicycle shop, toy shop, "
                      "hardware store, barber shop, ice cream parlor, pharmacy",
          "small, old, cozy, charming, tiny, busy, quiet",
          "with a striped awning, with flower boxes in the windows, with its lights on, "
          "with a chalkboard sign outside",
          outdoors="on a cobblestone street, on a quiet corner, in a small town, in an old town, "
                   "on a busy street"),
    topic("building", "cathedral, castle, temple, mosque, church, pagoda, monastery, town hall, "
                      "clock tower, palace",
          "old, ancient, grand, stone, small, white",
          outdoors="on a hilltop, in an old town, by a river, surrounded by trees, above a valley, "
                   "on a town square, overlooking the sea"),
    topic("building", "house|houses, bungalow, suburban house, cottage",
          "small, old, white, brick, wooden, two-story, yellow, blue",
          "with a red door|with red doors, with a white picket fence|with white picket fences, "
          "with a front porch|with front porches, with a garden|with gardens, with ivy on the walls, "
          "with smoke rising from the chimney|with smoke rising from their chimneys",
          outdoors="on a quiet street, in a small town, in the suburbs, by a lake, on a hill",
          seasons=True),
]

# --- scenery: landscapes, town scenes, interiors, artworks ------------------------------------
SCENERY = [
    topic("scene", "a mountain lake, a pine forest, a bamboo forest, a waterfall in a forest, "
                   "a rocky coastline, a sandy beach, a desert with sand dunes, a wheat field, "
                   "rice terraces, a valley with a winding river, a snowy mountain range, a frozen lake, "
                   "a lake with a wooden dock, cliffs above the sea, a forest path, "
                   "a meadow full of wildflowers, a canyon with red rocks, a glacier, a marsh with reeds, "
                   "rolling green hills, a field of tall grass, a quiet bay, a river in a forest, "
                   "a tropical island, an autumn forest, a birch forest, a misty valley, "
                   "a vineyard on a hillside, a mountain pass, a small island in a lake, a salt flat, "
                   "a volcano, tall sea cliffs, a lavender field, a pebble beach, a moorland, "
                   "a stream running over rocks",
          air="out", lead=True),
    topic("scene", "a quiet village street, a harbor with fishing boats, a canal lined with old houses, "
                   "a country road through rolling hills, a city skyline, a busy street market, "
                   "a train station platform, an empty parking lot, a suburban street with small houses, "
                   "a garden with a stone path, an orchard with rows of apple trees, a pumpkin patch, "
                   "a small town main street, a river running through a city, "
                   "an old stone bridge over a river, a park with a pond, a crowded beach, "
                   "a seaside promenade, a busy intersection, a fishing village, a mountain village, "
                   "a playground, a campsite by a lake, a farmers market, a quiet cemetery, "
                   "a rooftop terrace, a narrow alley, a bus stop on an empty road, "
                   "a gas station on a desert highway, a city square with a fountain",
          air="out", lead=True),
    topic("interior", "a cozy living room, a bright kitchen, an empty classroom, "
                      "a library with tall bookshelves, a small bedroom, a restaurant dining room, "
                      "a hotel lobby, a greenhouse full of plants, a workshop full of tools, a laundromat, "
                      "a bathroom with white tiles, an attic room, a museum hall, a quiet office, "
                      "a train carriage, a waiting room, a kids' bedroom, a bakery counter, "
                      "a small bookstore, a church interior, a dining table set for dinner, a messy desk, "
                      "a staircase in an old house, a long hallway, a home office, a country kitchen, "
                      "a reading nook, a sewing room, a hospital room, a pantry full of jars",
          air="in"),
    topic("art", "a marble statue of a horse, a bronze statue of a dancer, a bronze statue of a lion, "
                 "a stone statue of an angel, a marble bust of a woman, "
                 "a bronze statue of a man on a horse, a stone sculpture of a bear, "
                 "a marble statue of a woman holding a jar",
          outdoors="in a city park, in a town square, in a garden, in front of a museum",
          indoors="in a museum, in a gallery, in a grand hall"),
    topic("art", "a wooden carving of an owl, a clay figurine of a cat, a porcelain figurine of a dancer, "
                 "a wooden carving of a bear, a small stone carving of a fish, a clay model of a house, "
                 "a paper origami crane, a glass sculpture of a bird",
          indoors="on a shelf, on a mantelpiece, on a wooden table, in a display case, on a windowsill"),
    topic("art", "a mosaic of a fish, a stained glass window with a dove, a tapestry of a hunting scene, "
                 "a landscape painting in a gold frame, a framed portrait of an old woman, "
                 "a still life painting of fruit, a painted ceramic plate, "
                 "an embroidered cushion with flowers, a quilt with a star pattern, "
                 "a woven rug with a geometric pattern, a mural of sunflowers on a brick wall, "
                 "a chalk drawing on a sidewalk, a painted sign above a shop, "
                 "a child's drawing of a house and a sun"),
]

TOPICS = PEOPLE + ANIMALS + VEHICLES + FOOD + OBJECTS + PLANTS + BUILDINGS + SCENERY

# --- styles: a prefix ("a watercolor of ...") or a suffix ("..., film photo"), by kind -----------
ALL = "person pet farm wildlife tiny vehicle food object furniture plant tree building scene interior art"
PICTURES = "person pet farm wildlife tiny vehicle food object furniture plant tree building scene interior"
LIVING = "person pet farm wildlife tiny"
PREFIXES = [
    ("a photo of", ALL), ("a photograph of", ALL), ("a black and white photo of", ALL),
    ("an old photograph of", "person vehicle building scene"), ("a snapshot of", ALL),
    ("photo of", ALL), ("an oil painting of", PICTURES), ("a watercolor of", PICTURES),
    ("a watercolor painting of", PICTURES), ("watercolor painting of", PICTURES),
    ("a pencil sketch of", PICTURES), ("a charcoal drawing of", "person pet farm wildlife building object"),
    ("an ink drawing of", PICTURES),
    ("a 3d render of", "vehicle object furniture food building interior pet"),
    ("a digital illustration of", PICTURES), ("an illustration of", PICTURES),
    ("a children's book illustration of", "person pet farm wildlife vehicle building scene"),
    ("a close-up of", "person pet farm wildlife tiny food object plant art"),
    ("close-up of", "person pet farm wildlife tiny food object plant art"),
    ("a close-up photo of", "pet tiny food object plant art"),
    ("a macro photo of", "tiny"), ("macro shot of", "tiny"), ("a portrait of", "person pet farm"),
    ("portrait of", "person"), ("a candid photo of", "person"), ("a wildlife photo of", "wildlife"),
    ("a wide shot of", "person farm wildlife vehicle tree building scene interior"),
    ("an aerial view of", "scene"), ("aerial view of", "scene"), ("a drone photo of", "scene"),
    ("a postcard of", "scene building tree"), ("a vintage postcard of", "scene building"),
    ("a still life of", "food object"), ("a product photo of", "object furniture"),
    ("a food photo of", "food"),
    ("a woodcut print of", "farm wildlife building scene tree"),
    ("a low angle shot of", "building person vehicle"),
    ("a cartoon drawing of", "person pet vehicle object"),
    ("a flat illustration of", "object vehicle food building"),
    ("a pastel drawing of", "plant tree scene pet food"), ("an acrylic painting of", PICTURES),
    ("a gouache painting of", "plant scene building food"), ("a picture of", ALL),
    ("a blurry photo of", "person pet vehicle"), ("a faded photo of", "person building scene"),
    ("a sketch of", PICTURES), ("an interior photo of", "interior"),
    ("a picture book drawing of", "pet farm"),
]
SUFFIXES = [
    ("film photo", ALL), ("35mm film", ALL), ("black and white", ALL), ("watercolor", PICTURES),
    ("oil on canvas", PICTURES), ("digital art", PICTURES), ("soft focus", ALL),
    ("shallow depth of field", LIVING + " food object plant"), ("long exposure", "scene"),
    ("wide angle", "scene building interior"), ("telephoto", "wildlife farm"), ("pencil sketch", PICTURES),
    ("high detail", ALL), ("candid", "person"), ("isometric view", "building object furniture interior"),
    ("warm tones", ALL), ("muted colors", ALL), ("pastel colors", PICTURES), ("grainy film", ALL),
    ("overhead shot", "food object"), ("ink and wash", "scene building tree plant"),
    ("travel photo", "scene building"), ("documentary photo", "person"),
    ("3d render", "object furniture vehicle interior"), ("snapshot", "person pet vehicle scene"),
    ("close-up", "food object plant pet tiny"), ("vintage photo", "person vehicle building scene"),
    ("illustration", PICTURES), ("minimalist", "object plant tree scene"),
]


def article(phrase):
    """'a' or 'an' for a noun phrase, by its first sound."""
    first = phrase.split()[0]
    vowel = first[0] in "aeiou" and not first.startswith(("uk", "uni", "one", "use"))
    return ("an " if vowel else "a ") + phrase


COUNTS = ("two", "three", "a few", "")  # "" = a bare plural: "sheep grazing on a hillside"


def subject(rng, t, leading):
    """(noun phrase, is plural): a scenery noun as written, else [count] [adjective] noun [clothes].
    Leading the caption, an adjective + noun sometimes goes without its article, as in alt text
    ("old fisherman mending a net")."""
    noun = rng.choice(t.nouns)
    if t.kind in ("scene", "interior", "art"):
        return noun, False
    singular, _, plural = noun.partition("|")
    adj = rng.choice(t.adjs) + " " if t.adjs and rng.random() < 0.45 else ""
    if plural and rng.random() < 0.2:
        counts = COUNTS + (("a group of",) if t.kind == "person" else ())
        return " ".join(filter(None, (rng.choice(counts), adj + plural))), True
    bare = leading and adj and rng.random() < 0.2
    phrase = adj + singular if bare else article(adj + singular)
    if t.wear and rng.random() < 0.2:
        phrase += " " + rng.choice(t.wear)
    return phrase, False


def conditions(t, air):
    """The time/weather/light phrases that fit a subject outdoors ("out") or indoors ("in")."""
    if not t.weather:
        return ()
    if air == "out":
        return OUT_WHEN + (SEASON_WHEN if t.seasons else ())
    return IN_WHEN if air == "in" else ()


def styles(table, kind):
    return [s for s, kinds in table if kind in kinds.split()]


def caption(rng):
    """One caption: subject [action] [place] [time/weather/light], with at most one style phrase."""
    t = rng.choice(TOPICS)
    scenic = t.kind in ("scene", "interior")
    roll = rng.random()
    style = "prefix" if roll < 0.3 else "suffix" if roll < 0.5 else ""
    if t.lead and rng.random() < 0.2:
        text = rng.choice(LEADS) + " " + rng.choice(t.nouns)
    else:
        phrase, plural = subject(rng, t, leading=style != "prefix")
        words = [phrase]
        if t.actions and (t.act or rng.random() < 0.75):
            one, _, many = rng.choice(t.actions).partition("|")
            words.append(many if plural and many else one)
        air = t.air
        places = [(p, "out") for p in t.outdoors] + [(p, "in") for p in t.indoors]
        if places and rng.random() < 0.7:
            place, air = rng.choice(places)
            words.append(place)
        when = conditions(t, air)
        if when and rng.random() < (0.6 if scenic else 0.3):
            words.append(rng.choice(when))
        text = " ".join(words)
    if style == "prefix":
        text = rng.choice(styles(PREFIXES, t.kind)) + " " + text
    elif style == "suffix":
        text += ", " + rng.choice(styles(SUFFIXES, t.kind))
    return text


def generate():
    rng = random.Random(SEED)
    seen, out = set(), []
    for _ in range(MAX_TRIES):
        text = caption(rng)
        if text in seen or len(text.split(",")[0].split()) < MIN_WORDS or len(text.split()) > MAX_WORDS:
            continue
        assert text.isascii() and text == text.lower() and "  " not in text, text
        seen.add(text)
        out.append(text)
        if len(out) == TARGET:
            break
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the file is not what this would write")
    args = parser.parse_args()
    lines = generate()
    data = "".join(line + "\n" for line in lines).encode("ascii")
    if args.check:
        try:
            with open(OUT, "rb") as f:
                same = f.read() == data
        except FileNotFoundError:
            same = False
        print(f"{os.path.relpath(OUT, REPO)}: {'up to date' if same else 'out of date'}")
        sys.exit(0 if same else 1)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(data)
    print(f"wrote {len(lines)} captions to {os.path.relpath(OUT, REPO)}")


if __name__ == "__main__":
    main()
