// A tiny corpus in the WikiText raw format (one paragraph per line, lines start and end with a
// space, blank rows are a single space, headings as " = Title = "), written for the tests of the
// data pipeline. The parquet files beside this file hold the same rows in the Hugging Face layout
// (regenerate them with make-parquet.mjs if the corpus changes).

const para = (s) => ` ${s} `;

function section(title, paragraphs) {
  return [para(`= ${title} =`), " ", ...paragraphs.flatMap((p) => [para(p), " "])];
}

export const MINI_SPLITS = {
  train: [
    " ",
    ...section("Lighthouse of Ardnamurchan", [
      "The lighthouse stands on the westernmost point of the British mainland . It was built between 1846 and 1849 by Alan Stevenson , using granite quarried on the Isle of Mull .",
      "Its tower is 36 metres ( 118 ft ) tall , and the light can be seen for 24 nautical miles . The keepers ' cottages now house a visitor centre @-@ with a café and a small museum .",
    ]),
    ...section("= Construction =", [
      "Work began in 1846 ; the foundations were cut into the rock by hand . Stevenson 's design used an Egyptian style , unusual for a Scottish light .",
      "The lamp was converted to electricity in 1988 , when the station was automated and the last keepers left .",
    ]),
    ...section("Naïve café culture in Zürich", [
      "Zürich 's cafés served Grüner Veltliner and crème brûlée ; the city counted 1 @,@ 204 licensed premises in 1913 .",
      "Visitors from 東京 and Москва described the coffee as « excellent » — but the prices as high .",
      "Emoji such as 😀 did not exist then , of course , yet the menus used symbols like € and § .",
    ]),
  ],
  validation: [
    " ",
    ...section("Tern migration", [
      "Arctic terns fly from their Arctic breeding grounds to the Antarctic and back each year , about 70 @,@ 900 km in all .",
      "A tern ringed as a chick in 1980 was found alive in 2010 , still making the journey .",
    ]),
  ],
  test: [
    " ",
    ...section("Basalt columns", [
      "The columns formed as a thick lava flow cooled and contracted , cracking into mostly hexagonal pillars .",
      "Some columns are 12 m high ; the tallest stand in the cliffs above the sea .",
    ]),
  ],
};

/** The file text of wiki.<split>.raw for a split of the mini corpus. */
export function rawText(split) {
  return MINI_SPLITS[split].join("\n") + "\n";
}

/** The rows the HF wikitext loader (and its parquet files) gives: line + "\n", blank lines as "". */
export function hfRows(split) {
  return MINI_SPLITS[split].map((l) => (l.trim() ? l + "\n" : ""));
}

/** The rows with text, as the pipeline keeps them. */
export function textRows(split) {
  return hfRows(split).filter((r) => r.trim() !== "");
}
