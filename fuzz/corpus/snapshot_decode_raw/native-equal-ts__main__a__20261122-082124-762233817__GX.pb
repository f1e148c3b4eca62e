 
GXavm:main )ÙכױKPך›
records
rnd-00acְֽBתו
rnd-01aְֽBתו
rnd-02baְֽBתו
rnd-03abbcbְֽBתו
rnd-04bbaְֽBתו
rnd-05bbְֽBתו
rnd-06bbcbcְֽBתו
rnd-07accabaְֽBתו
rnd-08aְֽBתו
rnd-09aaaaְֽBתו%
same-everything	identicalְֽBתו
tie-00abcְֽBתו
tie-01abcְֽBתו
tie-02abְֽBתו
tie-03abְֽBתו
tie-04BְֽBתו
tie-05BְֽBתו
tie-06sameְֽBתו
tie-07ZebraְֽBתו;
tie-08(xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxְֽBתו