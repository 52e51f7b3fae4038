"""Caption-like sentences for the store benchmark on real embeddings (tests/bench/store_embeddings.sh).

Writes IMAGES pairs of lines (a caption, then a shorter paraphrase of it: an image's two
vectors) and then QUERIES lines of searches that are none of the captions. Deterministic
(seeded), from word lists: 170 subjects, 40 adjectives, 30 actions, 40 places, 11 times of
day and 7 framings, so the sentences share words and topics as a photo library's captions do.

    python3 tests/scripts/caption_sentences.py IMAGES QUERIES OUT.txt
"""
import random
import sys

random.seed(42)
subjects = """dog cat horse cow sheep goat pig chicken duck goose swan eagle owl parrot pigeon crow fox wolf bear deer rabbit squirrel mouse
elephant giraffe zebra lion tiger leopard monkey gorilla kangaroo koala panda camel donkey turtle frog snake lizard fish shark dolphin whale
man woman boy girl child baby couple family crowd chef doctor nurse farmer soldier police officer firefighter teacher student musician
guitarist drummer dancer runner cyclist skier surfer swimmer climber hiker fisherman painter photographer tourist worker mechanic pilot
car truck bus train tram bicycle motorcycle scooter boat ship sailboat canoe airplane helicopter rocket tractor ambulance taxi van
house cabin castle church temple mosque tower bridge lighthouse barn windmill skyscraper tent stadium museum library market station
tree flower rose sunflower tulip cactus mushroom pumpkin apple banana orange lemon strawberry grapes bread cake pizza burger salad soup
clock lamp chair table sofa bed piano violin guitar drum camera phone laptop book newspaper umbrella bottle cup teapot vase candle kite
ball balloon robot statue fountain bench mailbox fire hydrant traffic light street sign""".split()
adjectives = """black white brown gray red orange yellow green blue purple pink golden silver old young small large tiny huge wet dry dirty
clean shiny rusty wooden broken colorful striped spotted fluffy sleepy happy angry lonely busy empty crowded bright dark blurry""".split()
actions = """standing sitting lying running walking jumping sleeping eating drinking playing swimming flying climbing resting waiting
parked floating crossing reading singing dancing riding pulling carrying hiding looking""".split()
places = """on a beach|in a park|on a busy street|in a forest|in the snow|in a kitchen|in a living room|on a mountain|by a lake|in a field of grass
|on a farm|in a city square|at a train station|in a desert|under a bridge|near a river|in a garden|on a rooftop|in a classroom|in a hospital
|at a market|on a wooden table|in a parking lot|at the harbor|in a cave|on an island|in a stadium|in a museum|in the rain|on a country road
|next to a fence|in front of a house|inside a church|at a playground|in an office|on a sidewalk|in a swimming pool|at an airport|in a library|in a barn""".replace("\n", "").split("|")
times = ["", "", "", " at sunset", " at night", " in the morning", " in winter", " in autumn", " on a sunny day", " on a foggy day", " in black and white"]
frames = ["a photo of {x}", "{x}", "a picture showing {x}", "an image of {x}", "a close-up of {x}", "a blurry photo of {x}", "a view of {x}"]
def phrase():
    s, a, act, p, t = random.choice(subjects), random.choice(adjectives), random.choice(actions), random.choice(places), random.choice(times)
    n = random.random()
    if n < 0.3:
        x = f"a {a} {s} {act} {p}{t}"
    elif n < 0.6:
        x = f"a {a} {s} {p}{t}"
    elif n < 0.8:
        s2 = random.choice(subjects)
        x = f"a {s} and a {s2} {act} {p}{t}"
    else:
        x = f"two {a} {s}s {act} {p}{t}"
    return x, (s, a, act, p, t)
def paraphrase(parts):
    s, a, act, p, t = parts
    return random.choice([f"{s} {p}", f"the {a} {s} is {act}", f"{a} {s}, {act}{t}", f"there is a {s} {p}"])
n = int(sys.argv[1]); q = int(sys.argv[2])
seen = set()
out = open(sys.argv[3], "w")
count = 0
while count < n:
    x, parts = phrase()
    cap = random.choice(frames).format(x=x)
    if cap in seen: continue
    seen.add(cap)
    out.write(cap + "\n" + paraphrase(parts) + "\n")
    count += 1
qs = 0
while qs < q:
    x, parts = phrase()
    if x in seen: continue
    seen.add(x)
    out.write(random.choice(["", "photos of ", "find "]) + x + "\n"); qs += 1
