"""Plain English text that benchmark prompts are cut from (written for modelgate; no license strings)."""

CORPUS = """\
The morning train left the station a few minutes late, and the passengers settled into their seats with \
newspapers, coffee and the quiet patience of people who make the same journey every day. Outside the window \
the fields were still grey with frost, and a line of trees marked the edge of a river that nobody on the \
train had ever walked beside. A child counted the cows in every field and announced each new total to the \
whole carriage. The conductor moved slowly down the aisle, checking tickets and answering questions about \
connections, platforms and the weather in the city. Somewhere near the back a telephone rang twice and \
stopped. The heating clicked on and the windows began to clear.
In the old market square the stalls opened one by one. A baker arranged loaves of bread in neat rows, a \
fishmonger packed ice around the morning catch, and a woman selling flowers trimmed the stems of tulips \
with a small curved knife. The clock on the town hall struck nine, then ten, as the square filled with \
shoppers, tourists and a brass band that practised the same three songs until lunch. Pigeons gathered \
wherever crumbs fell. An old man sat on a bench and read the same page of his book for an hour.
Engineers who build large systems learn to measure before they change anything. A server that answers \
quickly for one user may slow down when a hundred arrive at once, and the only way to know is to send it \
real traffic and record what happens: how long the first byte takes, how steady the stream is, how long \
the whole answer takes, and how many requests fail. Averages hide the slow tail, so careful teams look at \
percentiles and at the shape of the distribution, not only at its middle.
The library on the hill had been a granary once, and the thick stone walls kept it cool in summer and \
warm in winter. Students came in the afternoons to read about history, chemistry and the lives of \
painters, and the librarian knew most of them by name. On rainy days the reading room was full and the \
only sound was the turning of pages and the soft tapping of the radiator pipes. A cat that belonged to \
nobody slept on the window sill above the atlas shelf.
Rivers carry water, sand and stories from the mountains to the sea. Along their banks people built mills, \
bridges, harbours and cities, and every bend of a large river has a name in some language. In spring the \
snow melts and the water rises; in late summer it falls again and reveals islands of gravel where birds \
build their nests. Fishermen read the colour of the water the way sailors read the sky.
A good recipe is a small program: gather the ingredients, heat the pan, add the onions, wait until they \
are soft and golden, then add the garlic, the tomatoes and a pinch of salt. Taste, adjust, and let it \
simmer while the pasta cooks. Every cook changes the recipe a little, and after a few years the dish \
belongs to the family rather than to the book it came from.
The observatory stood on a dry plateau far from the lights of any town. At night the astronomers opened \
the dome, pointed the telescope at a faint galaxy and waited while the camera gathered light for hours. \
In the morning they drank strong tea and compared the images with those from the year before, looking \
for a star that had brightened, a comet that had moved, or anything else the sky had decided to change.
"""
